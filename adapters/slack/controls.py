"""Stop and feedback on Slack: the blocks a reply carries (a Stop button while it streams, Slack's
feedback buttons under a finished answer), and what a click, a 🛑 reaction or Slack's own stop
button on an agent session becomes: a call to the core's `ReplyControls`.

A reaction names only the message (channel and ts), not its thread; `ThreadIndex` remembers the
thread of every question and reply message this process handled recently to find the chat.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.api import call
from adapters.slack.events import PLATFORM
from adapters.slack.formatting import escaped_text
from bridge.controls import ReplyControls, StopOutcome
from bridge.domain import ChatKey
from bridge.policy.origin import Origin
from bridge.ports import PlatformError, RateLimited

log = logging.getLogger(__name__)

STOP_ACTION = "chat_bridge_stop"
FEEDBACK_ACTION = "chat_bridge_feedback"
VOTE_VALUES = {"up": "up", "down": "down"}
STOP_REACTIONS = frozenset({"octagonal_sign"})  # 🛑
NOT_YOURS = "Only the person who asked, or an admin, can stop this reply."
THREADS_REMEMBERED = 10_000


@dataclass(frozen=True, slots=True)
class ReplyButtons:
    """Which controls a reply's messages carry (`streaming.stop_button`/`feedback_buttons`)."""

    stop: bool = False
    feedback: bool = False

    @classmethod
    def of(cls, controls: ReplyControls | None) -> ReplyButtons:
        if controls is None:
            return cls()
        return cls(stop=controls.stop_button, feedback=controls.feedback_buttons)


NO_BUTTONS = ReplyButtons()


def stop_block() -> dict[str, Any]:
    """An actions block with the Stop button (no block_id: Slack makes a new one per write)."""
    return {
        "type": "actions",
        "elements": [
            {
                "type": "button",
                "action_id": STOP_ACTION,
                "text": {"type": "plain_text", "text": "Stop", "emoji": True},
                "style": "danger",
                "value": "stop",
                "accessibility_label": "Stop writing this reply",
            }
        ],
    }


def feedback_block() -> dict[str, Any]:
    """Slack's 👍/👎 under an answer: a context_actions block with a feedback_buttons element."""
    return {
        "type": "context_actions",
        "elements": [
            {
                "type": "feedback_buttons",
                "action_id": FEEDBACK_ACTION,
                "positive_button": {
                    "text": {"type": "plain_text", "text": "👍"},
                    "value": "up",
                    "accessibility_label": "This answer was helpful",
                },
                "negative_button": {
                    "text": {"type": "plain_text", "text": "👎"},
                    "value": "down",
                    "accessibility_label": "This answer was not helpful",
                },
            }
        ],
    }


class ThreadIndex:
    """(channel, ts) -> the thread_ts of messages of recent questions and replies, bounded."""

    def __init__(self, size: int = THREADS_REMEMBERED) -> None:
        self._size = size
        self._threads: OrderedDict[tuple[str, str], str] = OrderedDict()

    def remember(self, channel: str, ts: str, thread_ts: str) -> None:
        key = (channel, ts)
        self._threads[key] = thread_ts
        self._threads.move_to_end(key)
        while len(self._threads) > self._size:
            self._threads.popitem(last=False)

    def thread_of(self, channel: str, ts: str) -> str:
        """The thread of the message; its own ts when unknown (a thread's root)."""
        return self._threads.get((channel, ts), ts)


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """Someone asked to stop a reply or voted on it, from a message of the reply (or its
    question, for a stop)."""

    origin: Origin
    chat: ChatKey
    message_ts: str
    action: str  # "stop" or "vote"
    vote: str | None = None


class SlackControls:
    """Turns clicks and reactions into `ReplyControls` calls; a refused Stop is answered with a
    notice only the clicker sees."""

    def __init__(self, controls: ReplyControls, client: AsyncWebClient) -> None:
        self._controls = controls
        self._client = client
        self.threads = ThreadIndex()

    async def handle(self, request: ControlRequest | None) -> None:
        if request is None:
            return
        if request.action == "vote":
            await self._controls.vote(
                request.origin, request.chat, request.message_ts, request.vote
            )
            return
        await self.stop(request, [request.message_ts])

    async def stop(self, request: ControlRequest, message_ids: list[str]) -> StopOutcome:
        outcome = StopOutcome.NOT_RUNNING
        for message_id in message_ids:
            outcome = await self._controls.stop(request.origin, request.chat, message_id)
            if outcome is not StopOutcome.NOT_RUNNING:
                break
        if outcome is StopOutcome.REFUSED:
            await self._tell_refused(request)
        return outcome

    async def _tell_refused(self, request: ControlRequest) -> None:
        origin, chat = request.origin, request.chat
        where = f"{chat.channel}/{chat.thread}"
        try:
            await call(
                "chat.postEphemeral",
                where,
                self._client.chat_postEphemeral(
                    channel=chat.channel,
                    user=origin.user,
                    thread_ts=chat.thread,
                    text=escaped_text(NOT_YOURS),
                ),
            )
        except (RateLimited, PlatformError) as exc:
            log.info("slack: could not tell %s the stop was refused in %s: %s",
                     origin.user, where, exc)  # fmt: skip

    # --- parsing ---------------------------------------------------------------------------

    def click(self, body: Mapping[str, Any]) -> ControlRequest | None:
        """A block_actions payload for the Stop or feedback buttons."""
        actions = body.get("actions")
        action = actions[0] if isinstance(actions, list) and actions else None
        container = body.get("container")
        message = body.get("message")
        user = body.get("user")
        if not (
            isinstance(action, Mapping)
            and isinstance(container, Mapping)
            and isinstance(user, Mapping)
        ):
            log.warning("slack: dropping a malformed button click")
            return None
        message = message if isinstance(message, Mapping) else {}
        channel = _text(container.get("channel_id")) or _id_of(body.get("channel"))
        ts = _text(container.get("message_ts"))
        thread = _text(container.get("thread_ts")) or _text(message.get("thread_ts")) or ts
        team = _id_of(body.get("team")) or _text(user.get("team_id"))
        clicker = _text(user.get("id"))
        if not (channel and ts and team and clicker):
            log.warning("slack: dropping a button click without its message or clicker")
            return None
        origin = _origin(clicker, team, channel, thread)
        chat = ChatKey(PLATFORM, team, channel, thread)
        if action.get("action_id") == STOP_ACTION:
            return ControlRequest(origin, chat, ts, "stop")
        vote = VOTE_VALUES.get(_text(action.get("value")))
        if action.get("action_id") == FEEDBACK_ACTION and vote is not None:
            return ControlRequest(origin, chat, ts, "vote", vote)
        return None

    def reaction(self, body: Mapping[str, Any], bot_user_id: str) -> ControlRequest | None:
        """A `reaction_added` event: 🛑 on a reply or on its question stops the reply."""
        event = body.get("event")
        if not isinstance(event, Mapping) or event.get("reaction") not in STOP_REACTIONS:
            return None
        item = event.get("item")
        user, team = _text(event.get("user")), _text(body.get("team_id"))
        if not isinstance(item, Mapping) or item.get("type") != "message":
            return None
        channel, ts = _text(item.get("channel")), _text(item.get("ts"))
        if not (channel and ts and user and team) or user == bot_user_id:
            return None
        thread = self.threads.thread_of(channel, ts)
        origin = _origin(user, team, channel, thread, item.get("channel_type") == "im")
        return ControlRequest(origin, ChatKey(PLATFORM, team, channel, thread), ts, "stop")

    @staticmethod
    def session_stop(body: Mapping[str, Any]) -> tuple[ControlRequest, list[str]] | None:
        """Slack's own stop button on an agent session (`agent_session_stopped`): the request,
        and the messages to look for the reply by (the streams Slack stopped, then the thread)."""
        event = body.get("event")
        if not isinstance(event, Mapping):
            return None
        channel, thread = _text(event.get("channel")), _text(event.get("thread_ts"))
        user, team = _text(event.get("user")), _text(body.get("team_id"))
        if not (channel and thread and user and team):
            log.warning("slack: dropping a malformed agent_session_stopped event")
            return None
        streams = event.get("streaming_message_ts")
        message_ids = (
            [_text(ts) for ts in streams if _text(ts)] if isinstance(streams, list) else []
        )
        origin = _origin(user, team, channel, thread)
        request = ControlRequest(origin, ChatKey(PLATFORM, team, channel, thread), thread, "stop")
        return request, [*message_ids, thread]


def _origin(user: str, team: str, channel: str, thread: str, im: bool = False) -> Origin:
    return Origin(
        PLATFORM,
        user,
        workspace=team,
        channel=channel,
        thread=f"{channel}/{thread}",
        is_dm=im or channel.startswith("D"),
        addressed=True,
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) and 0 < len(value) <= 64 else ""


def _id_of(value: Any) -> str:
    return _text(value.get("id")) if isinstance(value, Mapping) else _text(value)
