"""A Discord message as the JSON another instance hands to the holder of its shard's lease
(`[cluster]`), and back: the decided `Trigger` and where the message was written, never the raw
gateway payload.

Version 2 adds the message's files (`attachments`); a message without files is still written as
version 1, which instances of the previous release read during a rolling upgrade (one with files
they would answer without them, so it stays version 2, which they refuse).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.domain import AttachmentRef, ChatKey, InboundMessage
from bridge.policy.origin import Origin

VERSION = 2
READS = (1, 2)


@dataclass(frozen=True, slots=True)
class HandedMessage:
    """What the holder needs to answer: the trigger's facts and the message to reply to."""

    inbound: InboundMessage
    origin: Origin
    open_thread: bool
    guild_id: int | None
    channel_id: int  # where the message was written (its reply goes there, or in a new thread)
    message_id: int


def to_payload(handed: HandedMessage) -> dict[str, Any]:
    inbound, origin = handed.inbound, handed.origin
    payload: dict[str, Any] = {
        "v": VERSION if inbound.attachments else 1,
        "event_id": inbound.event_id,
        "chat": [inbound.chat_key.workspace, inbound.chat_key.channel, inbound.chat_key.thread],
        "author": inbound.author_id,
        "author_name": inbound.author_name,
        "text": inbound.text,
        "origin": {
            "user": origin.user,
            "workspace": origin.workspace,
            "channel": origin.channel,
            "thread": origin.thread,
            "category": origin.category,
            "roles": sorted(origin.roles),
            "is_dm": origin.is_dm,
            "addressed": origin.addressed,
        },
        "open_thread": handed.open_thread,
        "guild_id": handed.guild_id,
        "channel_id": handed.channel_id,
        "message_id": handed.message_id,
    }
    if inbound.attachments:
        payload["attachments"] = [
            {"id": a.id, "name": a.name, "size": a.size, "mime_type": a.mime_type, "url": a.source}
            for a in inbound.attachments
        ]
    return payload


def from_payload(payload: Mapping[str, Any]) -> HandedMessage:
    """Raises ValueError for a payload this version does not read."""
    if payload.get("v") not in READS:
        raise ValueError(f"handoff version {payload.get('v')!r}, this bridge reads {READS}")
    try:
        workspace, channel, thread = (str(part) for part in payload["chat"])
        place = payload["origin"]
        guild_id = payload["guild_id"]
        return HandedMessage(
            inbound=InboundMessage(
                event_id=str(payload["event_id"]),
                chat_key=ChatKey("discord", workspace, channel, thread),
                author_id=str(payload["author"]),
                text=str(payload["text"]),
                platform_message_id=str(payload["message_id"]),
                author_name=payload.get("author_name"),
                attachments=tuple(
                    AttachmentRef(
                        name=str(file["name"]),
                        size=int(file["size"]),
                        mime_type=str(file["mime_type"]),
                        source=str(file["url"]),
                        id=str(file["id"]),
                    )
                    for file in payload.get("attachments") or ()
                ),
            ),
            origin=Origin(
                platform="discord",
                user=str(place["user"]),
                workspace=str(place["workspace"]),
                channel=str(place["channel"]),
                thread=str(place["thread"]),
                category=str(place["category"]),
                roles=frozenset(str(role) for role in place["roles"]),
                is_dm=bool(place["is_dm"]),
                addressed=bool(place["addressed"]),
            ),
            open_thread=bool(payload["open_thread"]),
            guild_id=int(guild_id) if guild_id is not None else None,
            channel_id=int(payload["channel_id"]),
            message_id=int(payload["message_id"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"handoff not readable: {exc!r}") from None
