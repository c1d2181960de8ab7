"""A Slack message as the JSON another instance hands to the holder of its workspace's lease
(`[cluster]`), and back. Only the parsed, validated message travels, never the raw event.

Version 2 adds the message's files; a message without files is still written as version 1, so
an instance that reads only version 1 (during a rolling upgrade) takes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.slack.events import PLATFORM, SlackMessage
from bridge.domain import AttachmentRef, ChatKey, InboundMessage

VERSION = 2
READS = frozenset({1, 2})


def to_payload(message: SlackMessage) -> dict[str, Any]:
    inbound = message.inbound
    payload: dict[str, Any] = {
        "v": 1,
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
    if inbound.attachments:
        payload["v"] = VERSION
        payload["files"] = [
            {"name": f.name, "size": f.size, "mime_type": f.mime_type, "source": f.source,
             "id": f.id}
            for f in inbound.attachments
        ]  # fmt: skip
    return payload


def from_payload(payload: Mapping[str, Any]) -> SlackMessage:
    """Raises ValueError for a payload this version does not read."""
    if payload.get("v") not in READS:
        raise ValueError(f"handoff version {payload.get('v')!r}, this bridge reads {sorted(READS)}")
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
                attachments=_files(payload.get("files") or ()),
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


def _files(entries: Any) -> tuple[AttachmentRef, ...]:
    if not isinstance(entries, list | tuple):
        raise ValueError("handoff files: not a list")
    try:
        return tuple(
            AttachmentRef(
                name=str(f["name"]),
                size=int(f["size"]),
                mime_type=str(f["mime_type"]),
                source=str(f["source"]),
                id=str(f.get("id", "")),
            )
            for f in entries
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"handoff files: {exc!r}") from None
