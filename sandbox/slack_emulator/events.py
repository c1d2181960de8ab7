"""Events API payloads shaped like Slack's: inner events and the `event_callback` around them."""

from __future__ import annotations

import random
import re
import string
import time
from typing import Any

from sandbox.slack_emulator.model import AppIdentity, Message

_ID_ALPHABET = string.ascii_uppercase + string.digits
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")


def new_event_id() -> str:
    return "Ev" + "".join(random.choices(_ID_ALPHABET, k=10))


def event_callback(identity: AppIdentity, event: dict[str, Any]) -> dict[str, Any]:
    """The outer body Slack posts (HTTP) or wraps in an envelope (Socket Mode)."""
    return {
        "token": "emulated-verification-token",
        "team_id": identity.team_id,
        "context_team_id": identity.team_id,
        "context_enterprise_id": None,
        "api_app_id": identity.app_id,
        "event": event,
        "type": "event_callback",
        "event_id": new_event_id(),
        "event_time": int(time.time()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": identity.team_id,
                "user_id": identity.bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": "4-" + "".join(random.choices(_ID_ALPHABET, k=24)),
    }


def mentions(text: str, user_id: str) -> bool:
    return any(match.group(1) == user_id for match in _MENTION.finditer(text))


def rich_text_blocks(text: str) -> list[dict[str, Any]]:
    """The rich_text block the Slack client attaches to what a person types."""
    elements: list[dict[str, Any]] = []
    position = 0
    for match in _MENTION.finditer(text):
        if match.start() > position:
            elements.append({"type": "text", "text": text[position : match.start()]})
        elements.append({"type": "user", "user_id": match.group(1)})
        position = match.end()
    if position < len(text):
        elements.append({"type": "text", "text": text[position:]})
    block_id = "".join(random.choices(string.ascii_letters + string.digits, k=5))
    section = {"type": "rich_text_section", "elements": elements}
    return [{"type": "rich_text", "block_id": block_id, "elements": [section]}]


def message_event(message: Message, channel_type: str) -> dict[str, Any]:
    event = message.to_api()
    event.update(channel=message.channel, event_ts=message.ts, channel_type=channel_type)
    return event


def app_mention_event(message: Message) -> dict[str, Any]:
    event = message.to_api()
    event["type"] = "app_mention"
    event.pop("subtype", None)
    event.update(channel=message.channel, event_ts=message.ts)
    return event


def message_changed_event(
    previous: dict[str, Any], current: Message, channel_type: str, event_ts: str
) -> dict[str, Any]:
    return {
        "type": "message",
        "subtype": "message_changed",
        "message": current.to_api(),
        "previous_message": previous,
        "channel": current.channel,
        "hidden": True,
        "ts": event_ts,
        "event_ts": event_ts,
        "channel_type": channel_type,
    }


def message_deleted_event(previous: Message, channel_type: str, event_ts: str) -> dict[str, Any]:
    return {
        "type": "message",
        "subtype": "message_deleted",
        "hidden": True,
        "deleted_ts": previous.ts,
        "channel": previous.channel,
        "previous_message": previous.to_api(),
        "ts": event_ts,
        "event_ts": event_ts,
        "channel_type": channel_type,
    }


def assistant_thread_started_event(
    identity: AppIdentity, user: str, channel: str, thread_ts: str, context_channel: str | None
) -> dict[str, Any]:
    context: dict[str, Any] = {"team_id": identity.team_id, "enterprise_id": None}
    if context_channel:
        context["channel_id"] = context_channel
    return {
        "type": "assistant_thread_started",
        "assistant_thread": {
            "user_id": user,
            "context": context,
            "channel_id": channel,
            "thread_ts": thread_ts,
        },
        "event_ts": f"{time.time():.6f}",
    }


def reaction_added_event(
    user: str, reaction: str, message: Message, channel_type: str, event_ts: str
) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "reaction_added", "user": user, "reaction": reaction}
    if message.author and message.author != "USLACKBOT":
        event["item_user"] = message.author  # absent for messages no user wrote
    event["item"] = {
        "type": "message",
        "channel": message.channel,
        "ts": message.ts,
        "channel_type": channel_type,
    }
    event["event_ts"] = event_ts
    return event


def app_home_opened_event(user: str, channel: str, tab: str, event_ts: str) -> dict[str, Any]:
    """The user opened the app's Home or Messages tab (under the agent view, the Messages tab is
    where a conversation with the agent starts)."""
    return {"type": "app_home_opened", "user": user, "channel": channel, "tab": tab,
            "event_ts": event_ts}  # fmt: skip


def agent_session_stopped_event(
    user: str, channel: str, thread_ts: str, streams: list[str], event_ts: str
) -> dict[str, Any]:
    """The user clicked Slack's own Stop button on an agent session; `streams` lists the app's
    streaming messages Slack stopped (empty when none was streaming)."""
    return {
        "type": "agent_session_stopped",
        "user": user,
        "channel": channel,
        "thread_ts": thread_ts,
        "streaming_message_ts": streams,
        "event_ts": event_ts,
    }


def tombstone_changed_event(
    previous: dict[str, Any], tombstone: Message, channel_type: str, event_ts: str
) -> dict[str, Any]:
    """A thread's root deleted while it has replies: Slack leaves a tombstone in its place and
    sends message_changed (not message_deleted)."""
    message = tombstone.to_api()
    message["hidden"] = True
    return {
        "type": "message",
        "subtype": "message_changed",
        "message": message,
        "previous_message": previous,
        "channel": tombstone.channel,
        "hidden": True,
        "ts": event_ts,
        "event_ts": event_ts,
        "channel_type": channel_type,
    }
