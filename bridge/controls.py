"""Stop and feedback: what a user can do to a reply from the platform (a button, a reaction).

Adapters turn a click or a reaction into `ReplyControls.stop` / `vote`; the responder registers
each reply while it streams, so a Stop finds it by any of its platform messages. Who may stop a
reply: the person who asked, an admin (`[access] admins`), or anyone in a DM.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from bridge.domain import ChatKey, Role
from bridge.policy.origin import Origin
from bridge.ports import ChatStore

log = logging.getLogger(__name__)

VOTES = ("up", "down")


class StopOutcome(StrEnum):
    STOPPED = "stopped"
    REFUSED = "refused"  # not the asker, not an admin, not a DM
    NOT_RUNNING = "not_running"  # finished already, or not a reply of this process
    # Not streaming here: asked of the other instances (`[cluster]`); the one writing the reply
    # stops it if this person may.
    RELAYED = "relayed"


@dataclass(eq=False)
class LiveReply:
    """A reply while it streams: where it shows, who asked, and how to stop it."""

    platform: str
    chat: ChatKey
    asker: str
    user_message_id: str  # the platform id of the message it answers
    message_ids: Callable[[], Sequence[str]]
    _cancel: Callable[[], object] | None = None
    stopped_by: str | None = None
    _requested: asyncio.Event = field(default_factory=asyncio.Event)

    def shows(self, message_id: str) -> bool:
        return message_id == self.user_message_id or message_id in self.message_ids()

    def bind(self, cancel: Callable[[], object]) -> None:
        """What stopping does (the responder cancels the LLM stream); a Stop asked for before
        this is applied at once."""
        self._cancel = cancel
        if self.stopped_by is not None:
            cancel()

    def stop(self, by: str) -> None:
        if self.stopped_by is None:
            self.stopped_by = by
            self._requested.set()
            if self._cancel is not None:
                self._cancel()

    @property
    def stop_requested(self) -> bool:
        return self.stopped_by is not None


class ReplyControls:
    def __init__(
        self,
        *,
        store: ChatStore,
        is_admin: Callable[[Origin], bool] = lambda origin: False,
        on_vote: Callable[[str, str | None], None] | None = None,
        stop_button: bool = True,
        feedback_buttons: bool = True,
    ) -> None:
        # What the surfaces show (`streaming.stop_button`, `streaming.feedback_buttons`); a 🛑
        # reaction stops a reply either way.
        self.stop_button = stop_button
        self.feedback_buttons = feedback_buttons
        self._store = store
        self._is_admin = is_admin
        self._on_vote = on_vote
        self._live: dict[ChatKey, list[LiveReply]] = {}
        self._relay: Callable[[str], Awaitable[None]] | None = None

    def relay_through(self, send: Callable[[str], Awaitable[None]]) -> None:
        """Where a Stop for a reply not streaming here goes (`[cluster]`: every instance, through
        the database's wake-ups); `relayed` is what the others call with it."""
        self._relay = send

    def set_admin_check(self, is_admin: Callable[[Origin], bool]) -> None:
        self._is_admin = is_admin

    # --- the responder's side ----------------------------------------------------------------

    def register(
        self,
        platform: str,
        chat: ChatKey,
        *,
        asker: str,
        user_message_id: str,
        message_ids: Callable[[], Sequence[str]],
    ) -> LiveReply:
        live = LiveReply(platform, chat, asker, user_message_id, message_ids)
        self._live.setdefault(chat, []).append(live)
        return live

    def unregister(self, live: LiveReply) -> None:
        replies = self._live.get(live.chat)
        if replies is None:
            return
        if live in replies:
            replies.remove(live)
        if not replies:
            del self._live[live.chat]

    # --- the adapters' side ------------------------------------------------------------------

    def may_stop(self, origin: Origin, live: LiveReply) -> bool:
        return origin.user == live.asker or origin.is_dm or self._is_admin(origin)

    async def stop(self, origin: Origin, chat: ChatKey, message_id: str) -> StopOutcome:
        """A Stop on `message_id` (a message of the reply, or the question it answers)."""
        live = next((r for r in self._live.get(chat, ()) if r.shows(message_id)), None)
        if live is None:
            # The adapter may have guessed the chat (a question's thread, its channel).
            live = self._find(chat, message_id)
        if live is not None:
            return self._stop(origin, live)
        if self._relay is None:
            return StopOutcome.NOT_RUNNING
        request = {"origin": _origin_fields(origin), "chat": asdict(chat), "message": message_id}
        try:
            await self._relay(json.dumps(request))
        except Exception as exc:
            log.warning("stop in %s not relayed to the other instances: %s", chat, exc)
            return StopOutcome.NOT_RUNNING
        return StopOutcome.RELAYED

    async def relayed(self, detail: str) -> None:
        """A Stop another instance received for a reply it does not write. The reply is looked
        for by its message in every chat of the workspace: the receiver may have guessed the
        chat (a question's thread, its channel), and message ids do not repeat within one."""
        try:
            request = json.loads(detail)
            origin = Origin(**{**request["origin"], "roles": frozenset(request["origin"]["roles"])})
            chat = ChatKey(**request["chat"])
            message_id = str(request["message"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("a relayed stop was unreadable: %s", exc)
            return
        live = self._find(chat, message_id)
        if live is not None:
            self._stop(origin, live)

    def _find(self, chat: ChatKey, message_id: str) -> LiveReply | None:
        """The reply showing `message_id` in any chat of `chat`'s workspace."""
        for key, replies in self._live.items():
            if (key.platform, key.workspace) != (chat.platform, chat.workspace):
                continue
            for live in replies:
                if live.shows(message_id):
                    return live
        return None

    def _stop(self, origin: Origin, live: LiveReply) -> StopOutcome:
        if not self.may_stop(origin, live):
            log.info("stop refused: %s is not the asker of the reply in %s",
                     origin.user, live.chat)  # fmt: skip
            return StopOutcome.REFUSED
        if not live.stop_requested:
            log.info("reply in %s stopped by %s", live.chat, origin.user)
            live.stop(origin.user)
        return StopOutcome.STOPPED

    async def vote(self, origin: Origin, chat: ChatKey, message_id: str, value: str | None) -> bool:
        """A 👍/👎 (or its removal, `None`) on a reply's message; one vote per user and reply,
        the last one counts. False when `message_id` is no reply of the bot's or nothing
        changed."""
        if value is not None and value not in VOTES:
            raise ValueError(f"vote {value!r}: one of {VOTES} or None")
        message = await self._store.find_message(chat, message_id)
        if message is None or message.role is not Role.ASSISTANT:
            return False
        changed = await self._store.record_vote(message.id, origin.user, value)
        if changed and self._on_vote is not None:
            self._on_vote(origin.platform, value)
        return changed


def _origin_fields(origin: Origin) -> dict[str, object]:
    fields = asdict(origin)
    fields["roles"] = sorted(origin.roles)
    return fields
