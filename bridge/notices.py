"""What a user reads in chat when a reply cannot end normally: generic words and a short reference.

Upstream errors can carry host names, request bodies or internal ids; a channel (guests included)
sees only the kind of failure and a reference, and the log line with the details carries the same
reference.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from bridge.config import NoticeSettings
from bridge.domain import InboundMessage, MessageStatus, Role, StoredMessage
from bridge.ports import ChatStore, ReplySurface
from bridge.scheduler import Clock, EditScheduler
from bridge.telemetry import ErrorKind
from bridge.writer import ReplyWriter

if TYPE_CHECKING:
    from bridge.responder import ResponderSettings

log = logging.getLogger(__name__)

# A store call that waits out a short database outage (the responder's `_durably`).
Durably = Callable[[Callable[[], Awaitable[Any]], str, Mapping[str, object]], Awaitable[Any]]
# A chat where the bot may not write is logged once an hour, not once per message.
PERMISSION_LOG_INTERVAL = 3600.0

REASONS: dict[ErrorKind, str] = {
    ErrorKind.LLM: "the model service returned an error",
    ErrorKind.LLM_TIMEOUT: "the model stopped responding",
    ErrorKind.STORAGE: "the database was unavailable",
    ErrorKind.SHUTDOWN: "the bridge is restarting",
    ErrorKind.PLATFORM: "the chat platform refused the reply",
    ErrorKind.PERMISSION: "the bot may not write here",
    ErrorKind.INTERNAL: "an internal error",
}
TOO_LONG = "it reached the length limit"
TOO_SLOW = "it took too long"
QUESTION_DELETED = "its question was deleted"
NO_ANSWER_AFTER_TOOLS = "the model gave no answer after its tools"


def new_ref() -> str:
    """A reference short enough to read out, unique enough to find in a day's log."""
    return secrets.token_hex(3)


def failure_notice(notices: NoticeSettings, kind: ErrorKind, ref: str) -> str:
    return notices.failed.format(reason=REASONS.get(kind, REASONS[ErrorKind.INTERNAL]), ref=ref)


def cut_notice(notices: NoticeSettings, reason: str) -> str:
    return notices.cut.format(reason=reason)


class NoticePoster:
    """Posts a notice that is the whole reply to a message, through the shared scheduler."""

    def __init__(
        self,
        store: ChatStore,
        scheduler: EditScheduler,
        settings: ResponderSettings,
        durably: Durably,
    ) -> None:
        self._store = store
        self._scheduler = scheduler
        self._settings = settings
        self._durably = durably

    async def tell(
        self,
        surface: ReplySurface,
        user_message: StoredMessage,
        notice: str,
        where: Mapping[str, object],
    ) -> None:
        """Post `notice` as the reply to `user_message` and close its inbox entry, so no process
        answers it later. A notice that cannot be shown (channel gone, no permission) is logged
        once and the entry closed all the same: it is not tried again for ever."""
        posted = await self._post(surface, notice, where)
        add = functools.partial(
            self._store.add_message,
            user_message.chat_id,
            Role.ASSISTANT,
            "",
            status=MessageStatus.INTERRUPTED,
            reply_to_id=user_message.id,
            platform_message_ids=[posted] if posted else [],
        )
        await self._durably(add, "saving a notice", where)
        answered = functools.partial(self._store.mark_answered, user_message.id)
        await self._durably(answered, "saving a notice", where)

    async def refuse(
        self, inbound: InboundMessage, surface: ReplySurface, platform: str, exc: Exception
    ) -> None:
        """The message could not be stored even after waiting: tell the user rather than leave
        them waiting for an answer that will never come."""
        ref = new_ref()
        where = {"platform": platform, "event_id": inbound.event_id}
        log.error("could not store message %s (ref %s): %s", inbound.platform_message_id, ref,
                  exc, extra=where)  # fmt: skip
        await self._post(
            surface, failure_notice(self._settings.notices, ErrorKind.STORAGE, ref), where
        )

    async def _post(
        self, surface: ReplySurface, notice: str, where: Mapping[str, object]
    ) -> str | None:
        """The posted message's id; None (logged) when the platform refused it."""
        writer = ReplyWriter(surface, self._scheduler, style=self._settings.style, log_extra=where)
        try:
            return (await writer.post_once(notice)).id
        except Exception as exc:
            log.warning("could not post a notice: %s", exc, extra=where)
            return None


class PermissionLog:
    """Logs each chat where the bot may not write once an hour (the metrics count every reply:
    `chat_bridge_errors_total{kind="permission"}`)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._logged: dict[tuple[str, int], float] = {}

    def denied(
        self, platform: str, chat_id: int, error: Exception, where: Mapping[str, object]
    ) -> None:
        now = self._clock()
        last = self._logged.get((platform, chat_id))
        if last is not None and now - last < PERMISSION_LOG_INTERVAL:
            return
        if len(self._logged) > 10_000:
            self._logged.clear()  # bounded: at worst a chat is logged again
        self._logged[(platform, chat_id)] = now
        log.warning("no permission to write in chat %s (%s); logged once an hour per chat",
                    chat_id, error, extra=where)  # fmt: skip
