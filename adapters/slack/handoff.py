"""A Slack message as the JSON another instance hands to the holder of its workspace's lease
(`[cluster]`), and back. Only the parsed, validated message travels, never the raw event."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.slack.events import PLATFORM, SlackMessage
from bridge.domain import ChatKey, InboundMessage

VERSION = 1


def to_payload(message: SlackMessage) -> dict[str, Any]:
    inbound = message.inbound
    return {
        "v": VERSION,
        "event_id": inbound.event_id,
        "author": inbound.author_id,
        "text": inbound.text,
        "team": message.team,
        "channel": message.channel,
        "ts": message.ts,
        "thread_ts": message.thread_ts,
        "is_dm": message.is_dm,
        "mentions_bot": message.mentions_bot,
        "recipient_team": message.recipient_team,
    }


def from_payload(payload: Mapping[str, Any]) -> SlackMessage:
    """Raises ValueError for a payload this version does not read."""
    if payload.get("v") != VERSION:
        raise ValueError(f"handoff version {payload.get('v')!r}, this bridge reads {VERSION}")
    try:
        team, channel = str(payload["team"]), str(payload["channel"])
        ts, thread_ts = str(payload["ts"]), str(payload["thread_ts"])
        return SlackMessage(
            inbound=InboundMessage(
                event_id=str(payload["event_id"]),
                chat_key=ChatKey(PLATFORM, team, channel, thread_ts),
                author_id=str(payload["author"]),
                text=str(payload["text"]),
                platform_message_id=ts,
            ),
            team=team,
            channel=channel,
            ts=ts,
            thread_ts=thread_ts,
            is_dm=bool(payload["is_dm"]),
            mentions_bot=bool(payload["mentions_bot"]),
            recipient_team=str(payload["recipient_team"]),
        )
    except KeyError as exc:
        raise ValueError(f"handoff without {exc}") from None
