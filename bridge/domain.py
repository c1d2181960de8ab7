"""The chat domain shared by every platform: chats, messages, roles and the inbound message type.

Adapters translate platform events into `InboundMessage`; storage hands back `Chat` and
`StoredMessage`.
Everything here is frozen so it can cross task boundaries without defensive copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    # A tool's result, sent back to the model (`bridge.tools`); the assistant message that asked
    # for it holds the call in `metadata["tool_calls"]`.
    TOOL = "tool"


class MessageStatus(StrEnum):
    PENDING = "pending"
    STREAMING = "streaming"
    COMPLETE = "complete"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    # Stopped by a user while it streamed (Stop button or 🛑): its text so far stands.
    STOPPED = "stopped"

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset(
    {MessageStatus.COMPLETE, MessageStatus.FAILED, MessageStatus.INTERRUPTED, MessageStatus.STOPPED}
)


@dataclass(frozen=True, slots=True)
class ChatKey:
    """Where a conversation lives. Empty strings stand for "none" (no workspace, no thread)."""

    platform: str
    workspace: str
    channel: str
    thread: str = ""

    def __str__(self) -> str:
        parts = [self.platform, self.workspace or "-", self.channel]
        if self.thread:
            parts.append(self.thread)
        return "/".join(parts)


@dataclass(frozen=True, slots=True)
class Chat:
    id: int
    key: ChatKey
    title: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    # Messages with an id at or below this floor are kept but no longer sent as context (/reset).
    context_floor: int = 0


@dataclass(frozen=True, slots=True)
class TokenUsage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    chat_id: int
    role: Role
    content: str
    status: MessageStatus
    author_id: str | None = None
    platform_message_ids: tuple[str, ...] = ()
    response_number: int = 0
    reply_to_id: int | None = None
    error: str | None = None
    model: str | None = None
    usage: TokenUsage | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AttachmentRef:
    """A file on a user's message as the platform announced it, not downloaded yet.

    `source` is where the platform's adapter fetches it from (Slack: `url_private_download`,
    fetched with the bot token; Discord: the attachment's signed CDN URL, valid about a day).
    `size` and `mime_type` are what the platform says; the download checks both again.
    """

    name: str
    size: int
    mime_type: str
    source: str
    id: str = ""


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A user's message as every adapter hands it to the core; no raw payload travels further."""

    event_id: str
    chat_key: ChatKey
    author_id: str
    text: str
    platform_message_id: str
    author_name: str | None = None
    attachments: tuple[AttachmentRef, ...] = ()


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """A message from before the bot joined the conversation (imported once as context)."""

    role: Role
    content: str
    author_id: str | None
    platform_message_id: str
