"""In-memory fakes of the core's ports: queue canned answers, record every call.

`MemoryStore` mirrors `storage.SqlChatStore`'s behaviour (the store tests pin that one down on real
databases); `ScriptedLLM` plays timed events; `RecordingSurface` is a platform that records what it
was asked to show and can refuse writes with 429s.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bridge.context import estimate_tokens
from bridge.domain import (
    Chat,
    ChatKey,
    HistoryEntry,
    InboundMessage,
    MessageStatus,
    Role,
    StoredMessage,
    TokenUsage,
)
from bridge.ports import (
    CompletionRequest,
    Delta,
    Finished,
    LLMError,
    PlatformError,
    PostedMessage,
    RateBucket,
    RateLimited,
    RateObservation,
    ReplyProgress,
    StreamEvent,
)

# --- store -----------------------------------------------------------------------------------


class MemoryStore:
    def __init__(self) -> None:
        self.chats: dict[ChatKey, Chat] = {}
        self.rows: dict[int, StoredMessage] = {}
        self.events: set[tuple[str, str]] = set()
        self.writes = 0
        self.writes_by_message: dict[int, int] = {}
        self._ids = itertools.count(1)

    async def get_or_create_chat(self, key: ChatKey) -> Chat:
        if key not in self.chats:
            self.chats[key] = Chat(id=len(self.chats) + 1, key=key)
            self.writes += 1
        return self.chats[key]

    def chat_by_id(self, chat_id: int) -> Chat:
        return next(c for c in self.chats.values() if c.id == chat_id)

    async def claim_event(self, platform: str, event_id: str) -> bool:
        self.writes += 1
        if (platform, event_id) in self.events:
            return False
        self.events.add((platform, event_id))
        return True

    async def accept_inbound(self, platform: str, message: InboundMessage) -> StoredMessage | None:
        chat = await self.get_or_create_chat(message.chat_key)
        if not await self.claim_event(platform, message.event_id):
            return None
        return await self.add_message(
            chat.id,
            Role.USER,
            message.text,
            status=MessageStatus.COMPLETE,
            author_id=message.author_id,
            platform_message_ids=[message.platform_message_id],
        )

    async def add_message(
        self,
        chat_id: int,
        role: Role,
        content: str,
        *,
        status: MessageStatus,
        reply_to_id: int | None = None,
        response_number: int = 0,
        author_id: str | None = None,
        platform_message_ids: Sequence[str] = (),
        model: str | None = None,
    ) -> StoredMessage:
        message = StoredMessage(
            id=next(self._ids),
            chat_id=chat_id,
            role=role,
            content=content,
            status=status,
            author_id=author_id,
            platform_message_ids=tuple(platform_message_ids),
            response_number=response_number,
            reply_to_id=reply_to_id,
            model=model,
        )
        self.rows[message.id] = message
        self._count(message.id)
        return message

    async def save_reply(self, message_id: int, progress: ReplyProgress) -> None:
        row = self.rows[message_id]
        self.rows[message_id] = replace(
            row,
            content=progress.content,
            status=progress.status,
            platform_message_ids=tuple(progress.platform_message_ids) or row.platform_message_ids,
            error=progress.error if progress.error is not None else row.error,
            model=progress.model or row.model,
            usage=progress.usage or row.usage,
            metadata=progress.metadata if progress.metadata is not None else row.metadata,
        )
        self._count(message_id)

    def _count(self, message_id: int) -> None:
        self.writes += 1
        self.writes_by_message[message_id] = self.writes_by_message.get(message_id, 0) + 1

    async def context_messages(self, chat: Chat, upto_id: int, limit: int) -> list[StoredMessage]:
        def position(m: StoredMessage) -> tuple[int, int]:
            return (m.reply_to_id or m.id, m.id)

        chosen = [
            m
            for m in self.rows.values()
            if m.chat_id == chat.id
            and m.id > chat.context_floor
            and position(m)[0] <= upto_id
            and m.response_number == 0
            and (
                m.role is not Role.ASSISTANT
                or (m.status not in (MessageStatus.PENDING, MessageStatus.STREAMING) and m.content)
            )
        ]
        return sorted(chosen, key=position)[-limit:]

    async def import_history(self, chat: Chat, entries: Sequence[HistoryEntry]) -> int:
        known = {m.platform_message_ids[:1] for m in self.rows.values() if m.chat_id == chat.id}
        new = [e for e in entries if (e.platform_message_id,) not in known]
        for entry in new:
            await self.add_message(
                chat.id,
                entry.role,
                entry.content,
                status=MessageStatus.COMPLETE,
                platform_message_ids=[entry.platform_message_id],
            )
        return len(new)

    async def set_title(self, chat_id: int, title: str) -> None:
        chat = self.chat_by_id(chat_id)
        self.chats[chat.key] = replace(chat, title=title)

    async def reset_context(self, chat_id: int) -> None:
        chat = self.chat_by_id(chat_id)
        self.chats[chat.key] = replace(chat, context_floor=max(self.rows, default=0))

    async def interrupt_stale_replies(self, older_than_seconds: float) -> list[StoredMessage]:
        return []

    async def prune_events(self, older_than_seconds: float) -> int:
        return 0

    def replies(self) -> list[StoredMessage]:
        return [m for m in self.rows.values() if m.role is Role.ASSISTANT]


# --- LLM -------------------------------------------------------------------------------------


@dataclass
class Script:
    """A timed stream: (delay before the event, event or exception) pairs, then usage."""

    steps: list[tuple[float, StreamEvent | BaseException]] = field(default_factory=list)

    @classmethod
    def text(
        cls,
        text: str,
        *,
        chunk: int = 4,
        delay: float = 0.0,
        first_delay: float = 0.0,
        choices: int = 1,
        fail_after: int | None = None,
        error: BaseException | None = None,
    ) -> Script:
        pieces = [text[i : i + chunk] for i in range(0, len(text), chunk)]
        steps: list[tuple[float, StreamEvent | BaseException]] = []
        for index, piece in enumerate(pieces):
            if fail_after is not None and index == fail_after:
                steps.append((delay, error or LLMError("connection lost", retryable=True)))
                return cls(steps)
            wait = first_delay if index == 0 else delay
            for choice in range(choices):
                steps.append((wait if choice == 0 else 0.0, Delta(choice, piece)))
        for choice in range(choices):
            steps.append((0.0, Finished(choice, "stop")))
        steps.append((0.0, TokenUsage(prompt_tokens=50, completion_tokens=len(pieces))))
        return cls(steps)


class ScriptedLLM:
    def __init__(self, *scripts: Script, default: str = "ok") -> None:
        self.scripts = list(scripts)
        self.default = default
        self.requests: list[CompletionRequest] = []
        self.titles: list[CompletionRequest] = []
        self.title_answer = "A Short Title"

    def queue(self, *scripts: Script) -> None:
        self.scripts.extend(scripts)

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(request)
        script = self.scripts.pop(0) if self.scripts else Script.text(self.default)
        for delay, event in script.steps:
            if delay:
                await asyncio.sleep(delay)
            if isinstance(event, BaseException):
                raise event
            if isinstance(event, TokenUsage):
                # Report what a real tokenizer would roughly count for this very request.
                prompt = sum(estimate_tokens(turn.content) + 4 for turn in request.messages)
                event = TokenUsage(prompt, event.completion_tokens)
            yield event

    async def complete(self, request: CompletionRequest) -> str:
        self.titles.append(request)
        return self.title_answer


# --- platform --------------------------------------------------------------------------------


@dataclass
class Write:
    at: float
    kind: str  # "post" | "update"
    message_id: str
    text: str
    final: bool = False


class RecordingSurface:
    """A platform that shows text instantly, or after `latency`, and can answer 429s."""

    def __init__(
        self,
        *,
        limit: int = 2000,
        edit_bucket: RateBucket | None = None,
        post_bucket: RateBucket | None = None,
        latency: float = 0.0,
        name: str = "s",
    ) -> None:
        self.max_message_chars = limit
        self._edit_bucket = edit_bucket or RateBucket(f"edit:{name}", 1000, 1.0)
        self._post_bucket = post_bucket or RateBucket(f"post:{name}", 1000, 1.0)
        self.latency = latency
        self.writes: list[Write] = []
        self.shown: dict[str, str] = {}
        self.typing: list[tuple[float, bool]] = []
        self.titles: list[str] = []
        self.refuse_next: list[float] = []  # retry_after of the next refused updates
        self.fail_updates = False
        self.observation: RateObservation | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self._ids = itertools.count(1)
        self.name = name

    def post_bucket(self) -> RateBucket:
        return self._post_bucket

    def edit_bucket(self) -> RateBucket:
        return self._edit_bucket

    async def start_typing(self) -> None:
        self.typing.append((asyncio.get_running_loop().time(), True))

    async def stop_typing(self) -> None:
        self.typing.append((asyncio.get_running_loop().time(), False))

    @property
    def typing_now(self) -> bool:
        return bool(self.typing) and self.typing[-1][1]

    async def post(self, text: str, *, response_number: int) -> PostedMessage:
        await self._enter()
        try:
            message_id = f"{self.name}-{next(self._ids)}"
            self.shown[message_id] = text
            self.writes.append(Write(self._now(), "post", message_id, text))
            return PostedMessage(message_id)
        finally:
            self.in_flight -= 1

    async def update(self, message: PostedMessage, text: str, *, final: bool) -> None:
        await self._enter()
        try:
            if self.refuse_next:
                raise RateLimited(self.refuse_next.pop(0))
            if self.fail_updates:
                raise PlatformError("message_not_found")
            assert len(text) <= self.max_message_chars, len(text)
            self.shown[message.id] = text
            self.writes.append(Write(self._now(), "update", message.id, text, final))
        finally:
            self.in_flight -= 1

    async def set_title(self, title: str) -> None:
        self.titles.append(title)

    def take_rate_observation(self) -> RateObservation | None:
        seen, self.observation = self.observation, None
        return seen

    async def _enter(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self.latency:
            await asyncio.sleep(self.latency)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def updates(self) -> list[Write]:
        return [w for w in self.writes if w.kind == "update"]

    def visible_text(self) -> str:
        """Everything the reply's messages show, in order, joined like a reader sees it."""
        return "\n".join(self.shown[k] for k in sorted(self.shown, key=_message_number))


def _message_number(message_id: str) -> int:
    return int(message_id.rsplit("-", 1)[1])


def inbound(text: str, event_id: str, *, key: ChatKey | None = None, author: str = "U1") -> Any:
    return InboundMessage(
        event_id=event_id,
        chat_key=key or ChatKey("test", "W1", "C1", "T1"),
        author_id=author,
        text=text,
        platform_message_id=f"m-{event_id}",
    )
