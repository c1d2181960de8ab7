"""The streaming responder: one per process, serving every platform through the ports.

For each user message: store it (claiming the event, so retries and replays are answered once),
show typing, post a placeholder, stream the completion into it through the shared scheduler,
persist at most once per visible update, and always end in a final state, with a visible notice
when anything failed. Replies in one chat run one at a time, in arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.config import LLMSettings, StreamingSettings
from bridge.context import TokenBudget, build_prompt
from bridge.domain import Chat, ChatKey, InboundMessage, MessageStatus, Role, StoredMessage
from bridge.domain import TokenUsage as Usage
from bridge.ports import (
    ChatStore,
    ChatTurn,
    CompletionRequest,
    Delta,
    Finished,
    LanguageModel,
    LLMError,
    ReplyProgress,
    ReplySurface,
)
from bridge.scheduler import EditScheduler, Sleep
from bridge.writer import ReplyWriter, WriterStyle

log = logging.getLogger(__name__)

# A server asking for a longer pause than this is not retried into a reply a user still waits for.
MAX_RETRY_WAIT = 30.0
TITLE_INSTRUCTION = (
    "Write a title of at most six words for the conversation below. "
    "Answer with the title only, no quotes, no final period."
)


@dataclass(frozen=True, slots=True)
class ResponderSettings:
    model: str = "gpt-4o-mini"
    temperature: float = 0.7
    system_prompt: str = ""
    n: int = 1
    max_context_tokens: int = 8000
    max_output_tokens: int | None = None
    max_retries: int = 3
    idle_timeout: float = 30.0
    titles: bool = True
    title_model: str | None = None
    style: WriterStyle = WriterStyle()
    history_limit: int = 200
    drain_timeout: float = 10.0

    @classmethod
    def from_config(cls, llm: LLMSettings, streaming: StreamingSettings) -> ResponderSettings:
        return cls(
            model=llm.model,
            temperature=llm.temperature,
            system_prompt=llm.system_prompt,
            n=llm.n,
            max_context_tokens=llm.max_context_tokens,
            max_output_tokens=llm.max_output_tokens,
            max_retries=llm.max_retries,
            idle_timeout=llm.idle_timeout,
            titles=llm.titles,
            title_model=llm.title_model,
            style=WriterStyle(placeholder=streaming.placeholder, cursor=streaming.cursor),
        )


@dataclass(slots=True)
class ReplyReport:
    """What happened to one reply (all its choices); metrics and tests read it."""

    user_message_id: int
    assistant_message_ids: list[int]
    status: MessageStatus
    error: str | None = None
    received_at: float = 0.0
    first_delta_at: float | None = None
    first_text_at: float | None = None
    final_at: float | None = None
    visible_updates: int = 0
    rate_limited: int = 0
    attempts: int = 1
    usage: Usage | None = None
    texts: list[str] = field(default_factory=list)


class _Failure(Exception):
    """Ends a reply; its message is what the user sees in the notice."""


class Responder:
    def __init__(
        self,
        *,
        store: ChatStore,
        llm: LanguageModel,
        scheduler: EditScheduler,
        settings: ResponderSettings,
        sleep: Sleep | None = None,
    ) -> None:
        self._store = store
        self._llm = llm
        self._scheduler = scheduler
        self.settings = settings
        self._sleep = sleep or asyncio.sleep
        self._budget = TokenBudget()
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}
        self._active: set[asyncio.Task[Any]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        self.name = "responder"

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._closing = False

    async def stop(self) -> None:
        """Refuse new work, let replies in flight finish for a while, then interrupt the rest."""
        self._closing = True
        pending = set(self._active)
        if pending:
            _, still = await asyncio.wait(pending, timeout=self.settings.drain_timeout)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    @property
    def accepting(self) -> bool:
        return not self._closing

    # --- entry points ------------------------------------------------------------------------

    async def handle(
        self, platform: str, inbound: InboundMessage, surface: ReplySurface
    ) -> ReplyReport | None:
        """Answer a user message once; None when it was already handled (or we are stopping)."""
        if self._closing:
            # Leave the event unclaimed: the platform's retry can reach a running instance.
            log.warning("stopping: not taking event %s", inbound.event_id)
            return None
        stored = await self._store.accept_inbound(platform, inbound)
        if stored is None:
            log.info("event %s already handled; not answering again", inbound.event_id)
            return None
        return await self.answer(stored, inbound.chat_key, surface)

    async def answer(
        self, user_message: StoredMessage, key: ChatKey, surface: ReplySurface
    ) -> ReplyReport:
        """Answer a stored user message (after the chat's earlier replies)."""
        received = self._scheduler.now()
        task = asyncio.current_task()
        if task is not None:
            self._active.add(task)
        try:
            async with self._chat_turn(user_message.chat_id):
                return await self._reply(key, user_message, surface, received)
        finally:
            if task is not None:
                self._active.discard(task)

    @contextlib.asynccontextmanager
    async def _chat_turn(self, chat_id: int) -> AsyncIterator[None]:
        # asyncio.Lock wakes waiters first-in first-out, which keeps replies in arrival order.
        lock, users = self._locks.get(chat_id, (asyncio.Lock(), 0))
        self._locks[chat_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[chat_id]
            if users <= 1:
                del self._locks[chat_id]
            else:
                self._locks[chat_id] = (lock, users - 1)

    # --- one reply ---------------------------------------------------------------------------

    async def _reply(
        self, key: ChatKey, user_message: StoredMessage, surface: ReplySurface, received: float
    ) -> ReplyReport:
        settings = self.settings
        await _quietly(surface.start_typing(), "start typing")
        saves = _ProgressSaves(self._store)
        writers = [
            ReplyWriter(
                surface,
                self._scheduler,
                response_number=number,
                style=settings.style,
                on_visible=saves.saver(number),
            )
            for number in range(settings.n)
        ]
        report = ReplyReport(user_message.id, [], MessageStatus.COMPLETE)
        report.received_at = received
        failure: str | None = None
        cancelled = False
        chat: Chat | None = None
        try:
            # The placeholder goes out first; storage work that can wait comes after it.
            await asyncio.gather(*(writer.open() for writer in writers))
            for number in range(settings.n):
                row = await self._store.add_message(
                    user_message.chat_id,
                    Role.ASSISTANT,
                    "",
                    status=MessageStatus.PENDING,
                    reply_to_id=user_message.id,
                    response_number=number,
                    model=settings.model,
                )
                saves.ids[number] = row.id
            report.assistant_message_ids = list(saves.ids.values())
            chat = await self._store.get_chat(key)
            if chat is None:
                raise _Failure("the conversation is missing from storage")
            request, estimated = await self._request(chat, user_message)
            await self._stream(request, estimated, writers, report)
        except asyncio.CancelledError:
            cancelled = True
            failure = "the bridge is shutting down"
        except _Failure as exc:
            failure = str(exc)
        except Exception as exc:
            log.exception("reply to message %s failed", user_message.id)
            failure = f"internal error ({type(exc).__name__})"
        finally:
            # Shielded: even a cancelled reply must leave its final state on screen and on disk.
            await asyncio.shield(self._conclude(writers, saves, report, failure, surface))
        if cancelled:
            raise asyncio.CancelledError
        if failure is None and chat is not None and chat.title is None and settings.titles:
            self._spawn(self._make_title(chat, user_message, writers[0].text, surface))
        return report

    async def _request(
        self, chat: Chat, user_message: StoredMessage
    ) -> tuple[CompletionRequest, int]:
        settings = self.settings
        history = await self._store.context_messages(
            chat, upto_id=user_message.id, limit=settings.history_limit
        )
        system_prompt = str(chat.settings.get("system_prompt", settings.system_prompt))
        budget = settings.max_context_tokens - (settings.max_output_tokens or 0)
        turns, estimated = build_prompt(
            self._budget, settings.model, system_prompt, history, max(budget, 256)
        )
        request = CompletionRequest(
            model=settings.model,
            messages=turns,
            temperature=settings.temperature,
            n=settings.n,
            max_tokens=settings.max_output_tokens,
        )
        return request, estimated

    async def _stream(
        self,
        request: CompletionRequest,
        estimated: int,
        writers: Sequence[ReplyWriter],
        report: ReplyReport,
    ) -> None:
        settings = self.settings
        loop = asyncio.get_running_loop()
        idle = settings.idle_timeout
        for attempt in range(settings.max_retries + 1):
            report.attempts = attempt + 1
            try:
                async with asyncio.timeout_at(loop.time() + idle) as deadline:
                    rearmed = loop.time()
                    async for event in self._llm.stream(request):
                        now = loop.time()
                        # Re-arming costs a timer per call; once per tenth of the window is enough.
                        if now - rearmed > idle * 0.1:
                            deadline.reschedule(now + idle)
                            rearmed = now
                        if isinstance(event, Delta):
                            if report.first_delta_at is None:
                                report.first_delta_at = self._scheduler.now()
                            if event.choice < len(writers):
                                writers[event.choice].feed(event.text)
                        elif isinstance(event, Usage):
                            report.usage = event
                            self._budget.learn(request.model, estimated, event.prompt_tokens)
                        elif isinstance(event, Finished) and event.reason == "length":
                            log.info("reply choice %s hit the output token limit", event.choice)
                return
            except TimeoutError:
                raise _Failure(f"the model sent nothing for {idle:g} seconds") from None
            except LLMError as exc:
                shown = any(writer.text for writer in writers)
                if shown or not exc.retryable or attempt >= settings.max_retries:
                    raise _Failure(f"the model failed: {exc}") from exc
                backoff = min(0.5 * 2**attempt, 8.0)
                delay = backoff if exc.retry_after is None else min(exc.retry_after, MAX_RETRY_WAIT)
                log.warning("LLM error before the first token (%s); retry in %.1fs", exc, delay)
                await self._sleep(delay)

    async def _conclude(
        self,
        writers: Sequence[ReplyWriter],
        saves: _ProgressSaves,
        report: ReplyReport,
        failure: str | None,
        surface: ReplySurface,
    ) -> None:
        notice = f"⚠️ _Reply interrupted: {failure}._" if failure else ""
        await asyncio.gather(*(writer.finish(notice) for writer in writers), return_exceptions=True)
        await _quietly(surface.stop_typing(), "stop typing")
        status = MessageStatus.FAILED if failure else MessageStatus.COMPLETE
        report.status = status
        report.error = failure
        report.texts = [writer.text for writer in writers]
        report.visible_updates = sum(writer.visible_updates for writer in writers)
        report.rate_limited = sum(writer.rate_limited for writer in writers)
        report.final_at = max((w.final_at for w in writers if w.final_at), default=None)
        firsts = [w.first_text_at for w in writers if w.first_text_at is not None]
        report.first_text_at = min(firsts) if firsts else None
        await saves.settle()
        for number, writer in enumerate(writers):
            if number not in saves.ids:
                continue  # storage failed before the row existed; nothing to finish there
            await self._store.save_reply(
                saves.ids[number],
                ReplyProgress(
                    content=writer.text,
                    status=status,
                    platform_message_ids=writer.platform_message_ids,
                    error=failure or writer.error,
                    model=self.settings.model,
                    usage=report.usage if number == 0 else None,
                    metadata=_metadata(report, writer),
                ),
            )

    # --- titles ------------------------------------------------------------------------------

    async def _make_title(
        self, chat: Chat, user_message: StoredMessage, reply: str, surface: ReplySurface
    ) -> None:
        conversation = f"User: {user_message.content[:1500]}\n\nAssistant: {reply[:1500]}"
        request = CompletionRequest(
            model=self.settings.title_model or self.settings.model,
            messages=[ChatTurn(Role.SYSTEM, TITLE_INSTRUCTION), ChatTurn(Role.USER, conversation)],
            temperature=0.2,
            max_tokens=24,
        )
        try:
            raw = await self._llm.complete(request)
        except LLMError as exc:
            log.info("no title for chat %s: %s", chat.id, exc)
            return
        title = clean_title(raw)
        if not title:
            return
        await self._store.set_title(chat.id, title)
        await _quietly(surface.set_title(title), "set title")

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def wait_background(self) -> None:
        """Wait for title generation and other follow-ups (tests, graceful shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)


class _ProgressSaves:
    """Saves a reply's progress without holding up its edits; the final save waits for them.

    Progress is only for crash recovery, so the edit pump must not wait on the database; but a
    progress save still running when the final one starts could overwrite it, hence `settle`.
    """

    def __init__(self, store: ChatStore) -> None:
        self._store = store
        self.ids: dict[int, int] = {}
        self._running: set[asyncio.Task[None]] = set()

    def saver(self, number: int) -> Any:
        async def save(writer: ReplyWriter) -> None:
            message_id = self.ids.get(number)
            if message_id is None:
                return  # the row is created right after the placeholder; the final save covers it
            progress = ReplyProgress(
                content=writer.text,
                status=MessageStatus.STREAMING,
                platform_message_ids=writer.platform_message_ids,
            )
            task = asyncio.get_running_loop().create_task(self._save(message_id, progress))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

        return save

    async def _save(self, message_id: int, progress: ReplyProgress) -> None:
        try:
            await self._store.save_reply(message_id, progress)
        except Exception as exc:  # the final save will still record the reply
            log.warning("could not save progress of message %s: %s", message_id, exc)

    async def settle(self) -> None:
        if self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)


def clean_title(raw: str) -> str:
    lines = [line.strip() for line in raw.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    title = lines[0].strip("\"'*# ").removeprefix("Title:").strip().rstrip(".")
    return title[:100]


def _metadata(report: ReplyReport, writer: ReplyWriter) -> dict[str, Any]:
    def ms(at: float | None) -> int | None:
        return None if at is None else round((at - report.received_at) * 1000)

    return {
        "time_to_first_token_ms": ms(report.first_delta_at),
        "time_to_first_text_ms": ms(writer.first_text_at),
        "total_ms": ms(writer.final_at),
        "visible_updates": writer.visible_updates,
        "rate_limited": writer.rate_limited,
        "attempts": report.attempts,
        "messages": len(writer.messages),
    }


async def _quietly(call: Any, what: str) -> None:
    """Typing and titles are cosmetic: their failure is logged, never fatal to the reply."""
    try:
        await call
    except Exception as exc:
        log.warning("could not %s: %s", what, exc)
