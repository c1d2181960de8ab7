"""In-memory fakes of the core's ports: queue canned answers, record every call.

`MemoryStore` mirrors `storage.SqlChatStore`'s behaviour (the store tests pin that one down on real
databases); `ScriptedLLM` plays timed events. The platform fake, `RecordingSurface`, lives in
`sandbox.memory_platform` because the benchmarks use it too.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from bridge.context import estimate_tokens
from bridge.controls import ReplyControls, StopOutcome
from bridge.domain import (
    AttachmentRef,
    Chat,
    ChatKey,
    HistoryEntry,
    InboundMessage,
    MessageStatus,
    Role,
    StoredMessage,
    TokenUsage,
)
from bridge.policy.origin import Origin
from bridge.ports import (
    CompletionRequest,
    Delta,
    Finished,
    LLMError,
    Orphan,
    OwnerRecord,
    ReplyOutcome,
    ReplyProgress,
    RuntimeOverride,
    StreamEvent,
    ToolOutcome,
    UsageLine,
    UsageReport,
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
        self.owner = "memory-owner"
        self.owned: dict[int, str] = {}  # message id -> owner
        self.owner_rows: dict[str, OwnerRecord] = {}
        self.overrides: dict[tuple[str, str], RuntimeOverride] = {}
        self.usage: dict[tuple[date, str, str, str], tuple[int, int]] = {}
        self.outcomes: list[tuple[date, str, ReplyOutcome]] = []
        self.vote_rows: dict[int, dict[str, str]] = {}

    async def get_or_create_chat(self, key: ChatKey) -> Chat:
        if key not in self.chats:
            self.chats[key] = Chat(id=len(self.chats) + 1, key=key)
            self.writes += 1
        return self.chats[key]

    async def get_chat(self, key: ChatKey) -> Chat | None:
        return self.chats.get(key)

    def chat_by_id(self, chat_id: int) -> Chat:
        return next(c for c in self.chats.values() if c.id == chat_id)

    async def claim_event(self, platform: str, event_id: str) -> bool:
        self.writes += 1
        if (platform, event_id) in self.events:
            return False
        self.events.add((platform, event_id))
        return True

    async def accept_inbound(
        self, platform: str, message: InboundMessage, metadata: dict[str, Any] | None = None
    ) -> StoredMessage | None:
        chat = await self.get_or_create_chat(message.chat_key)
        if not await self.claim_event(platform, message.event_id):
            return None
        stored = await self.add_message(
            chat.id,
            Role.USER,
            message.text,
            status=MessageStatus.PENDING,
            author_id=message.author_id,
            platform_message_ids=[message.platform_message_id],
        )
        stored = replace(stored, metadata=dict(metadata or {}))
        self.rows[stored.id] = stored
        return stored

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
        self.owned[message.id] = self.owner
        self._count(message.id)
        return message

    async def mark_answered(self, user_message_id: int) -> None:
        row = self.rows[user_message_id]
        self.rows[user_message_id] = replace(row, status=MessageStatus.COMPLETE)
        self._count(user_message_id)

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

    async def add_tool_round(
        self, chat_id: int, reply_to_id: int, outcomes: Sequence[ToolOutcome], *, model: str
    ) -> None:
        calls = [{"id": o.call.id, "name": o.call.name, "arguments": o.call.arguments}
                 for o in outcomes]  # fmt: skip
        rows = [(Role.ASSISTANT, "", {"tool_calls": calls})]
        rows += [
            (Role.TOOL, o.content, {"tool_call_id": o.call.id, "name": o.call.name,
                                    "error": o.error, "seconds": o.seconds})
            for o in outcomes
        ]  # fmt: skip
        for role, content, metadata in rows:
            message = StoredMessage(
                id=next(self._ids),
                chat_id=chat_id,
                role=role,
                content=content,
                status=MessageStatus.COMPLETE,
                reply_to_id=reply_to_id,
                model=model,
                metadata=metadata,
            )
            self.rows[message.id] = message
        self.writes += 1

    def _count(self, message_id: int) -> None:
        self.writes += 1
        self.writes_by_message[message_id] = self.writes_by_message.get(message_id, 0) + 1

    async def context_messages(self, chat: Chat, upto_id: int, limit: int) -> list[StoredMessage]:
        def tool_round(m: StoredMessage) -> bool:
            return m.role is Role.TOOL or "tool_calls" in m.metadata

        def position(m: StoredMessage) -> tuple[int, int, int]:
            # The message, its tool rounds, then its reply (made before the rounds).
            rank = 0 if m.reply_to_id is None else (1 if tool_round(m) else 2)
            return (m.reply_to_id or m.id, rank, m.id)

        chosen = [
            m
            for m in self.rows.values()
            if m.chat_id == chat.id
            and m.id > chat.context_floor
            and position(m)[0] <= upto_id
            and m.response_number == 0
            and not m.metadata.get("deleted")  # as the SQL store: deleted ones are left out
            and (
                m.role is not Role.ASSISTANT
                or tool_round(m)
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

    async def reset_place(self, platform: str, workspace: str, channel: str) -> int:
        found = [
            chat
            for key, chat in self.chats.items()
            if (key.platform, key.workspace, key.channel) == (platform, workspace, channel)
        ]
        for chat in found:
            await self.reset_context(chat.id)
        return len(found)

    # --- policy ---

    async def runtime_overrides(self) -> list[RuntimeOverride]:
        return list(self.overrides.values())

    async def set_runtime_override(
        self, platform: str, scope: str, key: str, value: str, *, set_by: str
    ) -> None:
        current = self.overrides.get((platform, scope))
        values = {**(current.values if current else {}), key: value}
        self.overrides[(platform, scope)] = RuntimeOverride(platform, scope, values, set_by)

    async def clear_runtime_overrides(self, platform: str, scope: str) -> bool:
        return self.overrides.pop((platform, scope), None) is not None

    async def add_usage(
        self,
        day: date,
        platform: str,
        *,
        user: str,
        channel: str,
        tokens: int,
        outcome: ReplyOutcome | None = None,
    ) -> None:
        self.writes += 1
        if outcome is not None:
            self.outcomes.append((day, platform, outcome))
        for scope, key in (("user", user), ("channel", channel)):
            tokens_so_far, replies = self.usage.get((day, scope, platform, key), (0, 0))
            self.usage[(day, scope, platform, key)] = (tokens_so_far + tokens, replies + 1)

    async def usage_of(
        self, day: date, platform: str, *, user: str, channel: str
    ) -> tuple[int, int]:
        return (
            self.usage.get((day, "user", platform, user), (0, 0))[0],
            self.usage.get((day, "channel", platform, channel), (0, 0))[0],
        )

    async def usage_report(self, day: date, platform: str, *, limit: int = 10) -> UsageReport:
        def lines(scope: str) -> tuple[UsageLine, ...]:
            found = [
                UsageLine(key, tokens, replies)
                for (d, s, p, key), (tokens, replies) in self.usage.items()
                if (d, s, p) == (day, scope, platform)
            ]
            found.sort(key=lambda line: (-line.tokens, line.key))
            return tuple(found[:limit])

        return UsageReport(day, lines("user"), lines("channel"))

    async def register_owner(self, host: str, pid: int) -> None:
        from datetime import UTC, datetime

        self.owner_rows[self.owner] = OwnerRecord(self.owner, host, pid, datetime.now(UTC))

    async def heartbeat(self) -> None:
        return None

    async def release_owner(self) -> None:
        return None

    async def owners(self) -> list[OwnerRecord]:
        return list(self.owner_rows.values())

    async def orphans(
        self, owner_ids: Sequence[str], limit: int, after_id: int = 0
    ) -> list[Orphan]:
        found = []
        for row in self.rows.values():
            if row.id <= after_id:
                continue
            owner = self.owned.get(row.id)
            if row.role is Role.USER and row.status is MessageStatus.PENDING and owner in owner_ids:
                chat = self.chat_by_id(row.chat_id)
                replies = tuple(r for r in self.rows.values() if r.reply_to_id == row.id)
                found.append(Orphan(chat.key, row, str(owner), replies))
        return found[:limit]

    async def take_over(self, message_ids: Sequence[int], from_owner: str) -> set[int]:
        user = self.rows.get(message_ids[0]) if message_ids else None
        if user is None or user.status is not MessageStatus.PENDING:
            return set()
        taken = {i for i in message_ids if self.owned.get(i) == from_owner}
        for i in taken:
            self.owned[i] = self.owner
        return taken

    async def forget_owner(self, owner_id: str) -> bool:
        return self.owner_rows.pop(owner_id, None) is not None

    async def prune_events(self, older_than_seconds: float) -> int:
        return 0

    async def prune_messages(self, older_than_seconds: float) -> int:
        return 0

    # --- rich conversations ---

    async def get_message(self, message_id: int) -> StoredMessage | None:
        return self.rows.get(message_id)

    async def update_metadata(self, message_id: int, values: dict[str, Any]) -> None:
        row = self.rows[message_id]
        self.rows[message_id] = replace(row, metadata={**row.metadata, **values})
        self._count(message_id)

    async def find_message(self, key: ChatKey, platform_message_id: str) -> StoredMessage | None:
        chat = self.chats.get(key)
        if chat is None:
            return None
        for row in self.rows.values():
            if row.chat_id == chat.id and platform_message_id in row.platform_message_ids:
                return row
        return None

    async def edit_message(self, message_id: int, content: str, *, deleted: bool = False) -> None:
        row = self.rows[message_id]
        metadata = {**row.metadata, "edited_at": "now", **({"deleted": True} if deleted else {})}
        self.rows[message_id] = replace(row, content=content, metadata=metadata)
        self._count(message_id)

    async def record_vote(self, message_id: int, user: str, value: str | None) -> bool:
        votes = self.vote_rows.setdefault(message_id, {})
        if votes.get(user) == value:
            return False
        if value is None:
            del votes[user]
        else:
            votes[user] = value
        return True

    async def votes(self, message_id: int) -> dict[str, str]:
        return dict(self.vote_rows.get(message_id, {}))

    def replies(self) -> list[StoredMessage]:
        """The reply rows (not the rows of tool rounds)."""
        return [
            m
            for m in self.rows.values()
            if m.role is Role.ASSISTANT and "tool_calls" not in m.metadata
        ]


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
        self.title_delay = 0.0

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
        if self.title_delay:
            await asyncio.sleep(self.title_delay)
        return self.title_answer


def inbound(text: str, event_id: str, *, key: ChatKey | None = None, author: str = "U1") -> Any:
    return InboundMessage(
        event_id=event_id,
        chat_key=key or ChatKey("test", "W1", "C1", "T1"),
        author_id=author,
        text=text,
        platform_message_id=f"m-{event_id}",
    )


# --- files -----------------------------------------------------------------------------------


class MemoryVault:
    """A FileVault in memory."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    async def put(self, message_id: int, name: str, data: bytes) -> str:
        key = f"{message_id}/{len(self.files)}-{name}"
        self.files[key] = data
        return key

    async def get(self, key: str) -> bytes | None:
        return self.files.get(key)

    async def prune(self, older_than_seconds: float) -> int:
        return 0


class MemoryFiles:
    """A FileSource serving bytes by `source`, recording what was fetched."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files = dict(files or {})
        self.fetched: list[str] = []
        self.delay = 0.0

    async def fetch(self, ref: AttachmentRef, max_bytes: int) -> bytes:
        from bridge.ports import FileUnavailable

        self.fetched.append(ref.source)
        if self.delay:
            await asyncio.sleep(self.delay)
        data = self.files.get(ref.source)
        if data is None:
            raise FileUnavailable(f"{ref.source}: 404")
        if len(data) > max_bytes:
            raise FileUnavailable(f"{ref.source}: over {max_bytes} bytes", too_large=True)
        return data


# --- the core's controls, as the adapters' tests watch them -----------------------------------


class RecordingControls(ReplyControls):
    """The core's Stop and votes, remembering what the adapter asked for and what came of it."""

    def __init__(self, **parts: Any) -> None:
        super().__init__(**parts)
        self.stops: list[tuple[Origin, ChatKey, str, StopOutcome]] = []
        self.votes: list[tuple[Origin, ChatKey, str, str | None, bool]] = []

    async def stop(self, origin: Origin, chat: ChatKey, message_id: str) -> StopOutcome:
        outcome = await super().stop(origin, chat, message_id)
        self.stops.append((origin, chat, message_id, outcome))
        return outcome

    async def vote(self, origin: Origin, chat: ChatKey, message_id: str, value: str | None) -> bool:
        changed = await super().vote(origin, chat, message_id, value)
        self.votes.append((origin, chat, message_id, value, changed))
        return changed
