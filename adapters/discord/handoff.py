"""A Discord message as the JSON another instance hands to the holder of its shard's lease
(`[cluster]`), and back: the decided `Trigger` and where the message was written, never the raw
gateway payload."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.domain import ChatKey, InboundMessage
from bridge.policy.origin import Origin

VERSION = 1


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
    return {
        "v": VERSION,
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


def from_payload(payload: Mapping[str, Any]) -> HandedMessage:
    """Raises ValueError for a payload this version does not read."""
    if payload.get("v") != VERSION:
        raise ValueError(f"handoff version {payload.get('v')!r}, this bridge reads {VERSION}")
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
    except (KeyError, TypeError) as exc:
        raise ValueError(f"handoff not readable: {exc!r}") from None
