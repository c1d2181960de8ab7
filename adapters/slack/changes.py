"""People editing or deleting their Slack messages: `message_changed` / `message_deleted` events as
the core's `UserEdits` takes them. Never a new message to answer.

Slack also sends `message_changed` when nothing a person wrote changed (a link unfurled, replies
counted on a thread's root, metadata added): those are dropped by comparing the text. Deleting a
thread's root that has replies arrives as a `message_changed` to a "tombstone".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters.slack.events import (
    MAX_TEXT_CHARS,
    PLATFORM,
    BotIdentity,
    prompt_text,
    valid_channel,
    valid_team,
    valid_ts,
)
from bridge.domain import ChatKey
from bridge.text import clean_text

log = logging.getLogger(__name__)

CHANGE_SUBTYPES = frozenset({"message_changed", "message_deleted"})


@dataclass(frozen=True, slots=True)
class MessageChange:
    """A person's message at `ts` in `chat` now reads `text`; None: it was deleted."""

    chat: ChatKey
    ts: str
    text: str | None


def is_change(body: Mapping[str, Any]) -> bool:
    event = body.get("event")
    return isinstance(event, Mapping) and event.get("subtype") in CHANGE_SUBTYPES


def parse_change(body: Mapping[str, Any], bot: BotIdentity) -> MessageChange | None:
    """The change a message_changed / message_deleted event makes, or None to ignore it."""
    event = body.get("event")
    if not isinstance(event, Mapping):
        return None
    team, channel = body.get("team_id"), event.get("channel")
    if not (valid_team(team) and valid_channel(channel)):
        log.warning("slack: dropping a malformed %s event", str(event.get("subtype"))[:40])
        return None
    assert isinstance(team, str) and isinstance(channel, str)
    if event.get("subtype") == "message_deleted":
        return _deleted(event, team, channel, bot)
    return _changed(event, team, channel, bot)


def _changed(
    event: Mapping[str, Any], team: str, channel: str, bot: BotIdentity
) -> MessageChange | None:
    message, previous = event.get("message"), event.get("previous_message")
    if not isinstance(message, Mapping):
        return None
    ts = message.get("ts")
    if not valid_ts(ts) or _own(message, bot):
        return None
    assert isinstance(ts, str)
    chat = ChatKey(PLATFORM, team, channel, _thread(message, ts))
    if message.get("subtype") == "tombstone":
        return MessageChange(chat, ts, None)  # a thread's root deleted under its replies
    text = message.get("text")
    if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
        return None
    if isinstance(previous, Mapping):
        if _own(previous, bot):
            return None
        if previous.get("text") == text:
            return None  # an unfurl, a reply count, metadata: nothing the person wrote
    return MessageChange(chat, ts, prompt_text(clean_text(text), bot.user_id))


def _deleted(
    event: Mapping[str, Any], team: str, channel: str, bot: BotIdentity
) -> MessageChange | None:
    ts, previous = event.get("deleted_ts"), event.get("previous_message")
    if not valid_ts(ts):
        return None
    assert isinstance(ts, str)
    previous = previous if isinstance(previous, Mapping) else {}
    if _own(previous, bot):
        return None
    return MessageChange(ChatKey(PLATFORM, team, channel, _thread(previous, ts)), ts, None)


def _own(message: Mapping[str, Any], bot: BotIdentity) -> bool:
    bot_id = message.get("bot_id")
    return message.get("user") == bot.user_id or (bot_id is not None and bot_id == bot.bot_id)


def _thread(message: Mapping[str, Any], ts: str) -> str:
    thread = message.get("thread_ts")
    return thread if valid_ts(thread) and isinstance(thread, str) else ts
