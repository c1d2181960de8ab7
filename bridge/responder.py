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
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
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
from bridge.progress import ProgressSaves
from bridge.scheduler import EditScheduler, Sleep
from bridge.telemetry import ErrorKind, EventOutcome, NoObserver, ReplyObserver, ReplyReport
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


class _Failure(Exception):
    """Ends a reply; its message is what the user sees in the notice."""

    def __init__(self, message: str, kind: ErrorKind) -> None:
        super().__init__(message)
        self.kind = kind


class Responder:
    def __init__(
        self,
        *,
        store: ChatStore,
        llm: LanguageModel,
        scheduler: EditScheduler,
        settings: ResponderSettings,
        sleep: Sleep | None = None,
        observer: ReplyObserver | None = None,
    ) -> None:
        self._store = store
        self._llm = llm
        self._scheduler = scheduler
        self.settings = settings
        self._sleep = sleep or asyncio.sleep
        self._observer: ReplyObserver = observer or NoObserver()
        self._budget = TokenBudget()
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}
        self._active: set[asyncio.Task[Any]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        self.name = "responder"

    @property
    def scheduler(self) -> EditScheduler:
        """The process-wide scheduler; adapters draw their cosmetic requests from it too."""
        return self._scheduler

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
        where = {"platform": platform, "event_id": inbound.event_id}
        if self._closing:
            # Leave the event unclaimed: the platform's retry can reach a running instance.
            log.warning("stopping: not taking event %s", inbound.event_id, extra=where)
            self._observer.event(platform, EventOutcome.REFUSED)
            return None
        try:
            stored = await self._store.accept_inbound(platform, inbound)
        except Exception:
            self._observer.error(platform, ErrorKind.STORAGE)
            raise
        if stored is None:
            log.info("event %s already handled; not answering again", inbound.event_id, extra=where)
            self._observer.event(platform, EventOutcome.DUPLICATE)
            return None
        self._observer.event(platform, EventOutcome.HANDLED)
        return await self.answer(stored, inbound.chat_key, surface, platform=platform)

    async def answer(
        self,
        user_message: StoredMessage,
        key: ChatKey,
        surface: ReplySurface,
        *,
        platform: str | None = None,
    ) -> ReplyReport:
        """Answer a stored user message (after the chat's earlier replies)."""
        platform = platform or key.platform
        # PENDING until the reply concludes: a reply cancelled before it began is told apart.
        report = ReplyReport(user_message.id, [], MessageStatus.PENDING)
        report.received_at = self._scheduler.now()
        task = asyncio.current_task()
        if task is not None:
            self._active.add(task)
        self._observer.reply_started(platform)
        try:
            async with self._chat_turn(user_message.chat_id):
                await self._reply(key, user_message, surface, report, platform)
            return report
        except BaseException as exc:
            if report.status is MessageStatus.PENDING:
                report.status = MessageStatus.FAILED
                cancelled = isinstance(exc, asyncio.CancelledError)
                report.error_kind = ErrorKind.SHUTDOWN if cancelled else ErrorKind.INTERNAL
            elif report.error_kind is None and isinstance(exc, Exception):
                report.error_kind = ErrorKind.STORAGE  # only the final save runs after concluding
            raise
        finally:
            if task is not None:
                self._active.discard(task)
            self._observer.reply_finished(platform, report)

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
        self,
        key: ChatKey,
        user_message: StoredMessage,
        surface: ReplySurface,
        report: ReplyReport,
        platform: str,
    ) -> None:
        settings = self.settings
        where = _log_ids(platform, user_message)
        await _quietly(surface.start_typing(), "start typing", where)
        saves = ProgressSaves(self._store, where)
        writers = [
            ReplyWriter(
                surface,
                self._scheduler,
                response_number=number,
                style=settings.style,
                on_visible=saves.saver(number),
                log_extra=where,
            )
            for number in range(settings.n)
        ]
        failure: _Failure | None = None
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
                raise _Failure("the conversation is missing from storage", ErrorKind.STORAGE)
            request, estimated = await self._request(chat, user_message)
            await self._stream(request, estimated, writers, report, where)
        except asyncio.CancelledError:
            cancelled = True
            failure = _Failure("the bridge is shutting down", ErrorKind.SHUTDOWN)
        except _Failure as exc:
            failure = exc
        except Exception as exc:
            log.exception("reply to message %s failed", user_message.id, extra=where)
            failure = _Failure(f"internal error ({type(exc).__name__})", ErrorKind.INTERNAL)
        finally:
            # Shielded: even a cancelled reply must leave its final state on screen and on disk.
            await asyncio.shield(self._conclude(writers, saves, report, failure, surface, where))
        if cancelled:
            raise asyncio.CancelledError
        if failure is None and chat is not None and chat.title is None and settings.titles:
            title = self._make_title(chat, user_message, writers[0].text, surface, platform)
            self._spawn(title)

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
        where: Mapping[str, object],
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
                            log.info(
                                "reply choice %s hit the output token limit",
                                event.choice,
                                extra=where,
                            )
                return
            except TimeoutError:
                message = f"the model sent nothing for {idle:g} seconds"
                raise _Failure(message, ErrorKind.LLM_TIMEOUT) from None
            except LLMError as exc:
                shown = any(writer.has_text for writer in writers)
                if shown or not exc.retryable or attempt >= settings.max_retries:
                    raise _Failure(f"the model failed: {exc}", ErrorKind.LLM) from exc
                backoff = min(0.5 * 2**attempt, 8.0)
                delay = backoff if exc.retry_after is None else min(exc.retry_after, MAX_RETRY_WAIT)
                log.warning(
                    "LLM error before the first token (%s); retry in %.1fs", exc, delay, extra=where
                )
                await self._sleep(delay)

    async def _conclude(
        self,
        writers: Sequence[ReplyWriter],
        saves: ProgressSaves,
        report: ReplyReport,
        failure: _Failure | None,
        surface: ReplySurface,
        where: Mapping[str, object],
    ) -> None:
        notice = f"⚠️ _Reply interrupted: {failure}._" if failure else ""
        await asyncio.gather(*(writer.finish(notice) for writer in writers), return_exceptions=True)
        await _quietly(surface.stop_typing(), "stop typing", where)
        status = MessageStatus.FAILED if failure else MessageStatus.COMPLETE
        report.status = status
        report.error = str(failure) if failure else None
        if failure is not None:
            report.error_kind = failure.kind
        elif any(writer.error or writer.failed_writes for writer in writers):
            report.error_kind = ErrorKind.PLATFORM
        report.texts = [writer.text for writer in writers]
        report.visible_updates = sum(writer.visible_updates for writer in writers)
        report.rate_limited = sum(writer.rate_limited for writer in writers)
        report.final_at = max((w.final_at for w in writers if w.final_at), default=None)
        firsts = [w.first_text_at for w in writers if w.first_text_at is not None]
        report.first_text_at = min(firsts) if firsts else None
        log.info(
            "reply to message %s %s: %d visible updates, %d rate-limited, %.1fs",
            report.user_message_id,
            status,
            report.visible_updates,
            report.rate_limited,
            (report.final_at or self._scheduler.now()) - report.received_at,
            extra=where,
        )
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
                    error=report.error or writer.error,
                    model=self.settings.model,
                    usage=report.usage if number == 0 else None,
                    metadata=_metadata(report, writer),
                ),
            )

    # --- titles ------------------------------------------------------------------------------

    async def _make_title(
        self,
        chat: Chat,
        user_message: StoredMessage,
        reply: str,
        surface: ReplySurface,
        platform: str,
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
            log.info(
                "no title for chat %s: %s", chat.id, exc, extra=_log_ids(platform, user_message)
            )
            self._observer.error(platform, ErrorKind.TITLE)
            return
        title = clean_title(raw)
        if not title:
            return
        await self._store.set_title(chat.id, title)
        await _quietly(surface.set_title(title), "set title", _log_ids(platform, user_message))

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def wait_background(self) -> None:
        """Wait for title generation and other follow-ups (tests, graceful shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)


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


def _log_ids(platform: str, user_message: StoredMessage) -> dict[str, object]:
    """The `extra` of a reply's log lines: JSON logs carry these ids as fields."""
    return {"platform": platform, "chat_id": user_message.chat_id, "message_id": user_message.id}


async def _quietly(call: Any, what: str, where: Mapping[str, object]) -> None:
    """Typing and titles are cosmetic: their failure is logged, never fatal to the reply."""
    try:
        await call
    except Exception as exc:
        log.warning("could not %s: %s", what, exc, extra=where)
