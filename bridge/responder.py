"""The streaming responder: one per process, serving every platform through the ports.

For each user message: store it (claiming the event, so retries and replays are answered once),
show typing, post a placeholder, stream the completion into it through the shared scheduler,
persist at most once per visible update, and always end in a final state, with a visible notice
when anything failed. Replies in one chat run one at a time, in arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from bridge.attachments import Attachments, announced
from bridge.config import (
    LLMSettings,
    NoticeSettings,
    RecoverySettings,
    StorageSettings,
    StreamingSettings,
)
from bridge.context import TokenBudget, build_prompt
from bridge.controls import LiveReply, ReplyControls
from bridge.domain import Chat, ChatKey, InboundMessage, MessageStatus, Role, StoredMessage
from bridge.domain import TokenUsage as Usage
from bridge.live_feed import GuardedFeed, watched_reply
from bridge.notices import (
    NO_ANSWER_AFTER_TOOLS,
    QUESTION_DELETED,
    TOO_LONG,
    TOO_SLOW,
    NoticePoster,
    PermissionLog,
    cut_notice,
    failure_notice,
    new_ref,
)
from bridge.outage import through_outage
from bridge.policy.effective import ReplySettings
from bridge.policy.limits import Ticket
from bridge.ports import (
    ChatStore,
    CompletionRequest,
    Delta,
    Finished,
    LanguageModel,
    LLMError,
    PermissionDenied,
    Reasoning,
    ReplyEnding,
    ReplyFeed,
    ReplyProgress,
    ReplySurface,
    StoreUnavailable,
    ToolActivity,
    ToolCall,
    ToolCalls,
    ToolOutcome,
)
from bridge.progress import ProgressSaves, layout_of
from bridge.reasoning import Thinking
from bridge.scheduler import EditScheduler, Sleep
from bridge.telemetry import ErrorKind, EventOutcome, NoObserver, ReplyObserver, ReplyReport
from bridge.titles import Titles
from bridge.tools.loop import ToolRounds, Tools
from bridge.tools.progress import ToolProgress
from bridge.writer import Persist, ReplyWriter, WriterStyle

T = TypeVar("T")

log = logging.getLogger(__name__)

# A server asking for a longer pause than this is not retried into a reply a user still waits for.
MAX_RETRY_WAIT = 30.0


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
    reply_timeout: float = 600.0
    titles: bool = True
    title_model: str | None = None
    style: WriterStyle = WriterStyle()
    history_limit: int = 200
    drain_timeout: float = 10.0
    outage_tolerance: float = 30.0
    notices: NoticeSettings = field(default_factory=NoticeSettings)
    show_reasoning: str = "status"
    # Images to the model (`llm.vision`: "auto" sends them; the LLM adapter drops them for a
    # model that refuses them), and within how many user turns they are sent again.
    vision: bool = True
    image_turns: int = 3
    # The tools a reply is offered ("server.tool", "server.*", "*"); resolved per reply.
    tools: tuple[str, ...] = ()

    @classmethod
    def from_config(
        cls,
        llm: LLMSettings,
        streaming: StreamingSettings,
        *,
        recovery: RecoverySettings | None = None,
        storage: StorageSettings | None = None,
        notices: NoticeSettings | None = None,
    ) -> ResponderSettings:
        recovery = recovery or RecoverySettings()
        storage = storage or StorageSettings()
        return cls(
            model=llm.model,
            temperature=llm.temperature,
            system_prompt=llm.system_prompt,
            n=llm.n,
            max_context_tokens=llm.max_context_tokens,
            max_output_tokens=llm.max_output_tokens,
            max_retries=llm.max_retries,
            idle_timeout=llm.idle_timeout,
            reply_timeout=llm.reply_timeout,
            titles=llm.titles,
            title_model=llm.title_model,
            style=WriterStyle(
                placeholder=streaming.placeholder,
                cursor=streaming.cursor,
                max_messages=streaming.max_messages_per_reply,
                edit_interval=streaming.edit_interval,
            ),
            drain_timeout=recovery.drain_timeout,
            outage_tolerance=storage.outage_tolerance,
            notices=notices or NoticeSettings(),
            show_reasoning=streaming.show_reasoning,
            vision=llm.vision is not False,
            image_turns=llm.image_turns,
        )

    @property
    def reply_defaults(self) -> ReplySettings:
        """The settings of a reply no policy resolved (and of stored ones that lack them)."""
        return ReplySettings(
            model=self.model,
            system_prompt=self.system_prompt,
            temperature=self.temperature,
            max_output_tokens=self.max_output_tokens,
            max_context_tokens=self.max_context_tokens,
            n=self.n,
            titles=self.titles,
            edit_interval=self.style.edit_interval or 0.0,
            tools=self.tools,
        )

    def for_reply(self, reply: ReplySettings) -> ResponderSettings:
        """These settings with one reply's resolved ones (model, prompt, limits...)."""
        return replace(
            self,
            model=reply.model,
            system_prompt=reply.system_prompt,
            temperature=reply.temperature,
            max_output_tokens=reply.max_output_tokens,
            max_context_tokens=reply.max_context_tokens,
            n=reply.n,
            titles=reply.titles,
            style=replace(self.style, edit_interval=reply.edit_interval or None),
            tools=reply.tools,
        )


class _Failure(Exception):
    """Ends a reply. Its message goes to the log and the database; the user sees a generic notice
    with `ref`, which the log line carries too."""

    def __init__(self, message: str, kind: ErrorKind) -> None:
        super().__init__(message)
        self.kind = kind
        self.ref = new_ref()


class _Cut(Exception):
    """Ends a reply on purpose (a length or time limit): its text stands, with a notice."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Stopped(_Cut):
    """A user stopped the reply (Stop button or 🛑): its text stands, with `notices.stopped`."""

    def __init__(self, by: str) -> None:
        super().__init__(f"stopped by {by}")


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
        controls: ReplyControls | None = None,
        attachments: Attachments | None = None,
        tools: Tools | None = None,
        feed: ReplyFeed | None = None,
    ) -> None:
        self._store = store
        self.tools = tools
        self.controls = controls or ReplyControls(store=store)
        self.attachments = attachments
        self._llm = llm
        self._scheduler = scheduler
        self.settings = settings
        self._sleep = sleep or asyncio.sleep
        self._observer: ReplyObserver = observer or NoObserver()
        # Watchers of the replies streaming now (the console's live page); None: nobody, and
        # no reply does any work for them.
        self._feed: ReplyFeed | None = None if feed is None else GuardedFeed(feed)
        self._budget = TokenBudget()
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}
        self._active: set[asyncio.Task[Any]] = set()
        self._background: set[asyncio.Task[None]] = set()
        # User messages being answered here now (queued or streaming): recovery leaves them be.
        self.in_flight: set[int] = set()
        # Those whose reply has begun (an edit of a queued one is still answered as edited).
        self.begun: set[int] = set()
        self._permissions = PermissionLog(scheduler.now)
        self._titles = Titles(store, llm, settings, self._observer)
        # The notice that is the whole reply (a message not answered); recovery uses it too.
        self.notices = NoticePoster(store, scheduler, settings, self._durably)
        self._closing = False
        self._stopped = False
        self.name = "responder"

    @property
    def observer(self) -> ReplyObserver:
        """Told about every event and reply (the metrics); the intake reports to it too."""
        return self._observer

    @property
    def scheduler(self) -> EditScheduler:
        """The process-wide scheduler; adapters draw their cosmetic requests from it too."""
        return self._scheduler

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._closing = self._stopped = False

    async def stop(self) -> None:
        """Drain: every reply in flight or queued, and every message that still arrives, gets
        `drain_timeout` seconds to finish; then each one left ends with a notice (its partial
        text, or "ask again" for one that had not begun). The platforms stop taking new events
        before this runs (see Lifecycle), and their clients stay up until it returns."""
        self._closing = True
        deadline = asyncio.get_running_loop().time() + self.settings.drain_timeout
        while self._active:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            await asyncio.wait(set(self._active), timeout=remaining)
        still = set(self._active)
        if still:
            log.warning("drain: %d replies still running; ending them with a notice", len(still))
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._stopped = True

    @property
    def draining(self) -> bool:
        return self._closing

    @property
    def stop_timeout(self) -> float:
        """How long the lifecycle lets `stop` run: the drain, then the notices and final saves."""
        return self.settings.drain_timeout + 15.0

    # --- entry points ------------------------------------------------------------------------

    async def handle(
        self,
        platform: str,
        inbound: InboundMessage,
        surface: ReplySurface,
        *,
        settings: ReplySettings | None = None,
        ticket: Ticket | None = None,
    ) -> ReplyReport | None:
        """Answer a user message once; None when it was already handled.

        `settings`: what the policy resolved for it (stored with the message, so crash recovery
        answers it the same way); `ticket`: its place in the policy's limits (LLM slots).
        A message that arrives while the bridge drains is answered too: the platform delivered it
        to this process and will not deliver it again.
        """
        where = {"platform": platform, "event_id": inbound.event_id}
        reply = settings or self.settings.reply_defaults
        metadata: dict[str, Any] = {"settings": reply.to_dict()}
        if inbound.attachments:
            metadata["attachments"] = announced(inbound.attachments)
        try:
            stored = await self._durably(
                lambda: self._store.accept_inbound(platform, inbound, metadata),
                "storing a message",
                where,
            )
        except Exception as exc:
            self._observer.error(platform, ErrorKind.STORAGE)
            self._observer.event(platform, EventOutcome.REFUSED)
            await self.notices.refuse(inbound, surface, platform, exc)
            return None
        if stored is None:
            log.info("event %s already handled; not answering again", inbound.event_id, extra=where)
            self._observer.event(platform, EventOutcome.DUPLICATE)
            return None
        self._observer.event(platform, EventOutcome.HANDLED)
        if self._stopped:
            # Past the drain: stored as this (stopped) process's inbox entry, which the next
            # process to start recovers and answers.
            log.warning("message %s arrived after the drain; it is answered after the restart",
                        stored.id, extra=where)  # fmt: skip
            return None
        return await self.answer(
            stored, inbound.chat_key, surface, platform=platform, settings=reply, ticket=ticket
        )

    def stored_settings(self, user_message: StoredMessage) -> ReplySettings:
        """The settings a stored message was admitted with (the defaults for one without)."""
        stored = user_message.metadata.get("settings")
        defaults = self.settings.reply_defaults
        return ReplySettings.from_dict(stored, defaults) if isinstance(stored, dict) else defaults

    async def answer(
        self,
        user_message: StoredMessage,
        key: ChatKey,
        surface: ReplySurface,
        *,
        platform: str | None = None,
        resume: Sequence[StoredMessage] = (),
        settings: ReplySettings | None = None,
        ticket: Ticket | None = None,
    ) -> ReplyReport:
        """Answer a stored user message (after the chat's earlier replies).

        `resume`: the reply rows of a dead process that had posted only their placeholders
        (crash recovery); the answer streams into those messages instead of new ones.
        `settings`: None reads those stored with the message (crash recovery).
        """
        platform = platform or key.platform
        run = self.settings.for_reply(settings or self.stored_settings(user_message))
        # PENDING until the reply concludes: a reply cancelled before it began is told apart.
        report = ReplyReport(user_message.id, [], MessageStatus.PENDING)
        report.received_at = self._scheduler.now()
        task = asyncio.current_task()
        if task is not None:
            self._active.add(task)
        self.in_flight.add(user_message.id)
        self._observer.reply_started(platform)
        if self._feed is not None:
            self._feed.started(watched_reply(user_message, key, platform, run.model))
        began = False
        # Files are downloaded as the message arrives (Discord's links expire), while the reply
        # may still wait for the chat's previous one.
        files = self._collect_files(platform, user_message, surface)
        try:
            async with self._chat_turn(user_message.chat_id):
                began = True
                self.begun.add(user_message.id)
                if ticket is not None:
                    ticket.line_up()
                await self._reply(
                    key, user_message, surface, report, platform, run, resume, ticket, files
                )
            return report
        except BaseException as exc:
            if report.status is MessageStatus.PENDING:
                report.status = MessageStatus.FAILED
                cancelled = isinstance(exc, asyncio.CancelledError)
                report.error_kind = ErrorKind.SHUTDOWN if cancelled else ErrorKind.INTERNAL
            if not began:
                # Ended before its reply began (queued behind the chat's previous reply); one that
                # began ends with its own notice (its conclusion is shielded).
                where = _log_ids(platform, user_message)
                notice = self.settings.notices.ask_again
                try:
                    await asyncio.shield(self.notices.tell(surface, user_message, notice, where))
                except Exception as told:  # the entry stays open: the next start recovers it
                    log.warning("message %s left for recovery: %s", user_message.id, told,
                                extra=where)  # fmt: skip
            elif report.error_kind is None and isinstance(exc, Exception):
                report.error_kind = ErrorKind.STORAGE  # only the final save runs after concluding
            raise
        finally:
            if files is not None:
                files.cancel()  # a no-op once done; a reply that never began leaves its files
            if task is not None:
                self._active.discard(task)
            self.in_flight.discard(user_message.id)
            self.begun.discard(user_message.id)
            self._observer.reply_finished(platform, report)
            if self._feed is not None:
                _tell_ended(self._feed, report)

    def _collect_files(
        self, platform: str, user_message: StoredMessage, surface: ReplySurface
    ) -> asyncio.Future[StoredMessage] | None:
        if self.attachments is None or not user_message.metadata.get("attachments"):
            return None
        files = self._files_of(self.attachments, platform, user_message, surface)
        return asyncio.ensure_future(files)

    async def _files_of(
        self,
        attachments: Attachments,
        platform: str,
        user_message: StoredMessage,
        surface: ReplySurface,
    ) -> StoredMessage:
        """The message with its files downloaded and kept; its author is told once about those
        the model cannot read. A failure here costs the files, never the answer."""
        where = _log_ids(platform, user_message)
        try:
            collected, fresh = await attachments.collect(platform, user_message)
        except Exception as exc:
            log.warning("files of message %s not kept: %s", user_message.id, exc, extra=where)
            return user_message
        if fresh and (unread := attachments.unread_files(collected)):
            notice = self.settings.notices.unreadable.format(files=unread)
            await _quietly(surface.notify(notice), "tell about unreadable files", where)
        return collected

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
        settings: ResponderSettings,
        resume: Sequence[StoredMessage] = (),
        ticket: Ticket | None = None,
        files: asyncio.Future[StoredMessage] | None = None,
    ) -> None:
        where = _log_ids(platform, user_message)
        await _quietly(surface.start_typing(), "start typing", where)
        saves = ProgressSaves(self._store, where)

        def on_visible(number: int) -> Persist:
            save, feed = saves.saver(number), self._feed
            if feed is None:
                return save

            async def visible(writer: ReplyWriter) -> None:
                _tell_shown(feed, user_message.id, writers)
                await save(writer)

            return visible

        writers = [
            ReplyWriter(
                surface,
                self._scheduler,
                response_number=number,
                style=settings.style,
                on_visible=on_visible(number),
                log_extra=where,
            )
            for number in range(settings.n)
        ]
        failure: _Failure | None = None
        cut: _Cut | None = None
        cancelled = False
        chat: Chat | None = None

        async def show_thinking(status: str) -> None:
            for writer in writers:
                writer.show_status(status)
            await _quietly(surface.start_typing(status), "show thinking", where)

        thinking = Thinking(settings.show_reasoning, clock=self._scheduler.now, show=show_thinking)

        def native_tools(activity: Sequence[ToolActivity]) -> bool:
            try:
                return surface.show_tools(activity)
            except Exception as exc:  # cosmetic: the status line shows them instead
                log.warning("could not show the tools natively: %s", exc, extra=where)
                return False

        status_calls: list[asyncio.Future[None]] = []

        async def show_tool_status(status: str) -> None:
            for writer in writers:
                writer.show_status(status)
            # The platform's own status line (Slack's setStatus) is cosmetic and draws from a
            # budget shared by the workspace: a round never waits for it, and the latest wins.
            for pending in status_calls:
                pending.cancel()

            async def send() -> None:  # the request is made only if not superseded first
                await _quietly(surface.start_typing(status), "show the tools", where)

            status_calls[:] = [asyncio.ensure_future(send())]

        def refresh_writers() -> None:
            for writer in writers:
                writer.refresh()

        progress = ToolProgress(
            native=native_tools,
            refresh=refresh_writers,
            status=show_tool_status,
            clock=self._scheduler.now,
        )
        # Registered before the placeholder (and its Stop button) shows: a Stop from then on is
        # kept, and applied as soon as there is something to stop.
        live = self.controls.register(
            platform,
            key,
            asker=user_message.author_id or "",
            user_message_id=next(iter(user_message.platform_message_ids), ""),
            message_ids=lambda: [i for w in writers for i in w.platform_message_ids],
        )

        async def ask_and_stream(chat: Chat, asked: StoredMessage) -> None:
            # All a Stop can cut short: waiting for the files, for an LLM slot, the stream.
            if files is not None:
                asked = await files
            request, estimated = await self._durably(
                lambda: self._request(chat, asked, settings), "reading the history", where
            )
            report.estimated_prompt_tokens = estimated
            if ticket is not None:
                await self._wait_for_llm(ticket, writers, surface, where)
            rounds = None
            if self.tools is not None:
                rounds = self.tools.for_reply(
                    settings.tools,
                    choices=settings.n,
                    show=progress.show,
                    settle=progress.settle,
                    where=where,
                )
            async with asyncio.timeout(settings.reply_timeout):
                if rounds is None:
                    await self._stream(request, estimated, writers, report, settings, thinking,
                                       where)  # fmt: skip
                else:
                    await self._with_tools(
                        rounds, chat, asked, request, estimated, writers, report, settings,
                        thinking, where,
                    )  # fmt: skip

        try:
            if len(resume) == len(writers):
                for writer, row in zip(writers, resume, strict=True):
                    writer.adopt(row.platform_message_ids, "")
                    saves.ids[writer.response_number] = row.id
            else:
                await self._open(writers, platform, user_message, where)
                await self._create_rows(writers, saves, user_message, settings, where)
            report.assistant_message_ids = list(saves.ids.values())
            chat = await self._durably(
                lambda: self._store.get_chat(key), "reading the conversation", where
            )
            if chat is None:
                raise _Failure("the conversation is missing from storage", ErrorKind.STORAGE)
            await _stoppable(live, ask_and_stream(chat, user_message))
        except asyncio.CancelledError:
            cancelled = True
            if live.stop_requested:
                # Stopped by its user, then the bridge shut down: it ends as they asked.
                cut = _Stopped(live.stopped_by or "")
            else:
                failure = _Failure("the bridge is shutting down", ErrorKind.SHUTDOWN)
        except _Failure as exc:
            failure = exc
        except _Cut as exc:
            cut = exc
        except TimeoutError:
            cut = _Cut(TOO_SLOW)
            log.info("reply cut after %gs (llm.reply_timeout)", settings.reply_timeout, extra=where)
        except StoreUnavailable as exc:
            failure = _Failure(f"database unavailable: {exc}", ErrorKind.STORAGE)
        except Exception as exc:
            failure = _Failure(f"internal error: {type(exc).__name__}: {exc}", ErrorKind.INTERNAL)
            log.exception("reply to message %s failed (ref %s)", user_message.id, failure.ref,
                          extra=where)  # fmt: skip
        finally:
            # INTERNAL logged its traceback above; PERMISSION is logged once an hour per chat.
            quiet = (ErrorKind.INTERNAL, ErrorKind.PERMISSION)
            if failure is not None and failure.kind not in quiet:
                log.warning("reply to message %s failed (ref %s): %s", user_message.id,
                            failure.ref, failure, extra=where)  # fmt: skip
            # Shielded: even a cancelled reply must leave its final state on screen and on disk.
            if ticket is not None:
                ticket.give_slot()
            self.controls.unregister(live)
            thinking.close()
            progress.close()
            for pending in status_calls:
                pending.cancel()
            concluding = self._conclude(
                writers, saves, report, failure, cut, surface, user_message, settings, where,
                thinking,
            )  # fmt: skip
            await asyncio.shield(concluding)
        if cancelled:
            raise asyncio.CancelledError
        if failure is None and chat is not None and chat.title is None and settings.titles:
            title = self._titles.make(
                chat,
                user_message,
                writers[0].text,
                surface,
                platform,
                settings.model,
                slot=ticket.side_slot if ticket is not None else None,
            )
            self._spawn(title)

    async def _wait_for_llm(
        self,
        ticket: Ticket,
        writers: Sequence[ReplyWriter],
        surface: ReplySurface,
        where: Mapping[str, object],
    ) -> None:
        """Wait for one of the LLM's slots (limits.llm_concurrent_requests), in order of
        arrival; a wait longer than a few seconds says "queued": in the placeholder, and in the
        platform's own status line where it has one (Slack's native stream has no placeholder)."""
        if ticket.try_take_slot():
            return
        taking = asyncio.ensure_future(ticket.take_slot())
        try:
            done, _ = await asyncio.wait({taking}, timeout=ticket.queued_after)
            if done:
                return
            for writer in writers:
                writer.show_status(ticket.queued_notice)
            await _quietly(surface.start_typing(ticket.queued_status), "show queued", where)
            await taking
            await _quietly(surface.start_typing(), "start typing", where)
        finally:
            taking.cancel()  # a no-op once it is done; the ticket hands back a slot taken late

    async def _request(
        self, chat: Chat, user_message: StoredMessage, settings: ResponderSettings
    ) -> tuple[CompletionRequest, int]:
        history = await self._store.context_messages(
            chat, upto_id=user_message.id, limit=settings.history_limit
        )
        if not any(m.id == user_message.id for m in reversed(history)):
            # Its author deleted it while it waited for the chat's previous reply.
            raise _Cut(QUESTION_DELETED)
        system_prompt = str(chat.settings.get("system_prompt", settings.system_prompt))
        budget = settings.max_context_tokens - (settings.max_output_tokens or 0)
        files = None
        if self.attachments is not None:
            files = await self.attachments.for_prompt(
                history, image_turns=settings.image_turns, vision=settings.vision
            )
        turns, estimated = build_prompt(
            self._budget, settings.model, system_prompt, history, max(budget, 256), files
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
        settings: ResponderSettings,
        thinking: Thinking,
        where: Mapping[str, object],
        *,
        first_round: bool = True,
        before_text: str = "",
    ) -> tuple[ToolCall, ...]:
        """Stream one completion into the writers; returns the tool calls the model asked for
        (its first choice's), if any. `before_text` goes before this round's first words (a
        break after the text of an earlier round)."""
        loop = asyncio.get_running_loop()
        idle = settings.idle_timeout
        earlier = report.usage
        # Text of earlier rounds is not this round's: a retry is refused only for its own.
        shown_before = [len(writer.text) for writer in writers] if not first_round else None
        calls: tuple[ToolCall, ...] = ()
        for attempt in range(settings.max_retries + 1):
            if first_round:
                report.attempts = attempt + 1
            elif attempt:
                report.attempts += 1  # a retry within a later round
            at_length_limit = False
            calls = ()
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
                            if before_text and event.choice == 0 and event.text:
                                writers[0].feed(before_text)
                                before_text = ""
                            if report.first_delta_at is None:
                                report.first_delta_at = self._scheduler.now()
                                if thinking.active and (summary := thinking.answer_begins()):
                                    for writer in writers:
                                        writer.feed(summary)
                            if event.choice < len(writers):
                                writer = writers[event.choice]
                                writer.feed(event.text)
                                if writer.full and all(w.full for w in writers):
                                    log.info("reply cut at its message cap", extra=where)
                                    raise _Cut(TOO_LONG)
                        elif isinstance(event, Reasoning):
                            thinking.feed(event.text)
                        elif isinstance(event, ToolCalls):
                            if event.choice == 0:
                                calls = event.calls
                            # Reasoning that led to tools has ended: the tools' status follows,
                            # not "thinking… N s" through their run.
                            if thinking.active and (summary := thinking.answer_begins()):
                                writers[0].feed(summary)
                        elif isinstance(event, Usage):
                            report.usage = event if earlier is None else _summed(earlier, event)
                            if first_round:
                                self._budget.learn(request.model, estimated, event.prompt_tokens)
                        elif isinstance(event, Finished) and event.reason == "length":
                            log.info(
                                "reply choice %s hit the output token limit",
                                event.choice,
                                extra=where,
                            )
                            at_length_limit = True
                if at_length_limit:
                    raise _Cut(TOO_LONG)
                return calls
            except TimeoutError:
                message = f"the model sent nothing for {idle:g} seconds"
                raise _Failure(message, ErrorKind.LLM_TIMEOUT) from None
            except LLMError as exc:
                if shown_before is None:
                    shown = any(writer.has_text for writer in writers)
                else:
                    shown = any(len(w.text) > n for w, n in zip(writers, shown_before, strict=True))
                if shown or not exc.retryable or attempt >= settings.max_retries:
                    raise _Failure(f"the model failed: {exc}", ErrorKind.LLM) from exc
                backoff = min(0.5 * 2**attempt, 8.0)
                delay = backoff if exc.retry_after is None else min(exc.retry_after, MAX_RETRY_WAIT)
                log.warning(
                    "LLM error before the first token (%s); retry in %.1fs", exc, delay, extra=where
                )
                await self._sleep(delay)
        return calls  # not reached: the last attempt returns or raises

    async def _with_tools(
        self,
        rounds: ToolRounds,
        chat: Chat,
        asked: StoredMessage,
        request: CompletionRequest,
        estimated: int,
        writers: Sequence[ReplyWriter],
        report: ReplyReport,
        settings: ResponderSettings,
        thinking: Thinking,
        where: Mapping[str, object],
    ) -> None:
        """Stream, run the tools the model asks for, stream again with their results, up to
        `llm.max_tool_rounds` rounds (the last lets the model call none: it answers with what it
        has); each round's calls and results are stored as messages of the conversation."""

        def estimate(text: str) -> int:
            return self._budget.estimate(settings.model, text)

        budget = settings.max_context_tokens - (settings.max_output_tokens or 0)
        rounds.room_for(max(budget, 256), estimated, estimate)
        request = replace(request, tools=rounds.specs, tool_choice=rounds.choice)
        report.tools = rounds.metadata()
        writer = writers[0]
        first, between, prompt = True, "", estimated
        # Each round is stored while the model already answers it (the next request needs
        # nothing from the store), one after another so that they keep their order; the reply
        # ends only once they are stored.
        stored: asyncio.Future[None] | None = None

        async def store_round(after: asyncio.Future[None] | None, done: list[ToolOutcome]) -> None:
            if after is not None:
                await after
            await self._durably(
                functools.partial(
                    self._store.add_tool_round, chat.id, asked.id, done, model=settings.model
                ),
                "storing tool results",
                where,
            )

        try:
            while True:
                start = len(writer.text)
                calls = await self._stream(
                    request, estimated, writers, report, settings, thinking, where,
                    first_round=first, before_text=between,
                )  # fmt: skip
                first = False
                answered = len(writer.text) > start
                if not calls or request.tool_choice == "none":
                    if not answered:
                        # Calls it was told not to make (an endpoint that ignores tool_choice),
                        # or nothing at all: the reply would end on its earlier text alone.
                        raise _Cut(NO_ANSWER_AFTER_TOOLS)
                    break
                began = rounds.tools.clock()
                text = writer.text[start:]
                outcomes, used = rounds.fit(text, await rounds.run(calls), estimate)
                prompt += used
                # Each round's request is a prompt of its own (quotas without reported usage).
                report.estimated_prompt_tokens += prompt
                stored = asyncio.ensure_future(store_round(stored, outcomes))
                request = rounds.next_request(request, text, outcomes)
                rounds.round_took(rounds.tools.clock() - began)
                report.tools = rounds.metadata()
                between = "\n\n" if writer.text.strip() else ""
            if stored is not None:
                await stored  # a round that could not be stored fails the reply, as any save
                stored = None
        finally:
            if stored is not None:  # cut short (Stop, a limit, a failure): still stored
                await asyncio.gather(stored, return_exceptions=True)
        if footer := rounds.footer():
            writer.feed(f"\n\n{footer}" if writer.text.strip() else footer)
            report.tools = {**rounds.metadata(), "footer_chars": len(footer)}

    async def _conclude(
        self,
        writers: Sequence[ReplyWriter],
        saves: ProgressSaves,
        report: ReplyReport,
        failure: _Failure | None,
        cut: _Cut | None,
        surface: ReplySurface,
        user_message: StoredMessage,
        settings: ResponderSettings,
        where: Mapping[str, object],
        thinking: Thinking | None = None,
    ) -> None:
        notices = settings.notices
        stopped = isinstance(cut, _Stopped)
        if failure is not None:
            notice = failure_notice(notices, failure.kind, failure.ref)
        elif cut is not None:
            notice = notices.stopped if stopped else cut_notice(notices, cut.reason)
        else:
            notice = ""
        shown_ending = (
            ReplyEnding.FAILED
            if failure
            else (ReplyEnding.STOPPED if stopped else ReplyEnding.ANSWERED)
        )
        try:
            surface.end_reply(shown_ending)
        except Exception as exc:  # cosmetic: the reply's text matters more than its buttons
            log.warning("could not mark the reply's end: %s", exc, extra=where)
        await asyncio.gather(*(writer.finish(notice) for writer in writers), return_exceptions=True)
        await _quietly(surface.stop_typing(), "stop typing", where)
        status = (
            MessageStatus.FAILED
            if failure
            else (MessageStatus.STOPPED if stopped else MessageStatus.COMPLETE)
        )
        report.status = status
        report.error = str(failure) if failure else (f"cut: {cut}" if cut else None)
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
        # The final saves and the inbox entry's end go in one write-behind batch: a message is
        # never marked answered without its reply's final state, nor kept waiting after it.
        ending: list[Callable[[], Awaitable[None]]] = []
        for number, writer in enumerate(writers):
            if number not in saves.ids:
                continue  # storage failed before the row existed; nothing to finish there
            progress = ReplyProgress(
                content=writer.text,
                status=status,
                platform_message_ids=writer.platform_message_ids,
                error=report.error or writer.error,
                model=settings.model,
                usage=report.usage if number == 0 else None,
                metadata=_metadata(report, writer, thinking),
            )
            ending.append(functools.partial(self._store.save_reply, saves.ids[number], progress))
        ending.append(functools.partial(self._store.mark_answered, user_message.id))
        await asyncio.gather(*(self._durably(end, "saving a reply", where) for end in ending))

    async def _create_rows(
        self,
        writers: Sequence[ReplyWriter],
        saves: ProgressSaves,
        user_message: StoredMessage,
        settings: ResponderSettings,
        where: Mapping[str, object],
    ) -> None:
        """The reply's rows, once its placeholders are on screen (storage work that can wait)."""
        for number, writer in enumerate(writers):
            row = await self._durably(
                functools.partial(
                    self._store.add_message,
                    user_message.chat_id,
                    Role.ASSISTANT,
                    "",
                    status=MessageStatus.PENDING,
                    reply_to_id=user_message.id,
                    response_number=number,
                    # Crash recovery edits these messages: known from the start.
                    platform_message_ids=writer.platform_message_ids,
                    model=settings.model,
                ),
                "creating a reply",
                where,
            )
            saves.ids[number] = row.id

    async def _durably(
        self, call: Callable[[], Awaitable[T]], what: str, where: Mapping[str, object]
    ) -> T:
        """A store call that waits out a short database outage (`storage.outage_tolerance`)."""
        return await through_outage(
            call,
            tolerance=self.settings.outage_tolerance,
            clock=self._scheduler.now,
            sleep=self._sleep,
            what=what,
            where=where,
        )

    async def _open(
        self,
        writers: Sequence[ReplyWriter],
        platform: str,
        user_message: StoredMessage,
        where: Mapping[str, object],
    ) -> None:
        """Post the placeholders. Nowhere to write means no LLM call: it would answer no one."""
        outcomes = await asyncio.gather(
            *(writer.open() for writer in writers), return_exceptions=True
        )
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if not errors:
            return
        first = errors[0]
        if isinstance(first, PermissionDenied):
            self._permissions.denied(platform, user_message.chat_id, first, where)
            raise _Failure(f"no permission to write: {first}", ErrorKind.PERMISSION)
        if isinstance(first, Exception):
            raise _Failure(f"could not post: {type(first).__name__}: {first}", ErrorKind.PLATFORM)
        raise first

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def wait_background(self) -> None:
        """Wait for title generation and other follow-ups (tests, graceful shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)


def _metadata(
    report: ReplyReport, writer: ReplyWriter, thinking: Thinking | None = None
) -> dict[str, Any]:
    def ms(at: float | None) -> int | None:
        return None if at is None else round((at - report.received_at) * 1000)

    reasoning = thinking.metadata() if thinking is not None else None
    return {
        **({"reasoning": reasoning} if reasoning else {}),
        **({"tools": report.tools} if report.tools and writer.response_number == 0 else {}),
        "time_to_first_token_ms": ms(report.first_delta_at),
        "time_to_first_text_ms": ms(writer.first_text_at),
        "total_ms": ms(writer.final_at),
        "visible_updates": writer.visible_updates,
        "rate_limited": writer.rate_limited,
        "attempts": report.attempts,
        "messages": len(writer.messages),
        "layout": layout_of(writer),
    }


def _summed(earlier: Usage, later: Usage) -> Usage:
    """The usage of a reply of several requests (tool rounds): each round's prompt counts."""
    return Usage(
        earlier.prompt_tokens + later.prompt_tokens,
        earlier.completion_tokens + later.completion_tokens,
    )


def _tell_shown(feed: ReplyFeed, reply_id: int, writers: Sequence[ReplyWriter]) -> None:
    """After a visible write: what the writers hold and counted (never a store read)."""
    updates = sum(writer.visible_updates for writer in writers)
    limited = sum(writer.rate_limited for writer in writers)
    text = _joined([writer.text for writer in writers])
    feed.shown(reply_id, text, updates=updates, rate_limited=limited)


def _tell_ended(feed: ReplyFeed, report: ReplyReport) -> None:
    """Its final text (shown by the last write, which no progress update follows), then how it
    ended; one that ended before it began has no text, and may have no error but its kind."""
    reply_id, updates, limited = report.user_message_id, report.visible_updates, report.rate_limited
    if report.texts:
        feed.shown(reply_id, _joined(report.texts), updates=updates, rate_limited=limited)
    error = report.error
    if error is None and report.status is MessageStatus.FAILED and report.error_kind:
        error = str(report.error_kind)  # "shutdown", "internal": it failed before it began
    feed.ended(reply_id, report.status, error)


def _joined(texts: Sequence[str]) -> str:
    """The texts of a reply's choices as one (a single choice's own text: no copy)."""
    return texts[0] if len(texts) == 1 else "\n\n".join(texts)


def _log_ids(platform: str, user_message: StoredMessage) -> dict[str, object]:
    """The `extra` of a reply's log lines: JSON logs carry these ids as fields."""
    return {"platform": platform, "chat_id": user_message.chat_id, "message_id": user_message.id}


async def _quietly(call: Any, what: str, where: Mapping[str, object]) -> None:
    """Typing and titles are cosmetic: their failure is logged, never fatal to the reply."""
    try:
        await call
    except Exception as exc:
        log.warning("could not %s: %s", what, exc, extra=where)


async def _stoppable(live: LiveReply, streaming: Awaitable[None]) -> None:
    """Run the LLM stream so that a Stop cancels it (and its HTTP request) without cancelling
    the reply, which then ends with its text so far."""
    stream = asyncio.ensure_future(streaming)
    live.bind(stream.cancel)
    try:
        await stream
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if live.stop_requested and (task is None or not task.cancelling()):
            raise _Stopped(live.stopped_by or "") from None
        raise
