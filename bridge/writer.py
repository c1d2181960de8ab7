"""Makes one reply visible on its platform: a placeholder, throttled edits, continuations, the end.

The LLM side only appends text; a single pump task per reply turns the accumulated text into posts
and edits through the shared EditScheduler. Each write is awaited before the next is considered and
always carries the latest text, so a slow or rate-limited platform delays text but never loses or
reorders it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from bridge.ports import (
    MessageLimit,
    PlatformError,
    PlatformUnavailable,
    PostedMessage,
    RateLimited,
    ReplySurface,
)
from bridge.scheduler import EditScheduler, Lane, Urgency
from bridge.segments import Layout, Segment, clip, utf8_length

log = logging.getLogger(__name__)

Persist = Callable[["ReplyWriter"], Awaitable[None]]

# Failed writes tolerated per reply (retried, or continued in a new message) before its visible
# updates stop; the reply is still stored in full.
MAX_TRANSIENT_FAILURES = 4


@dataclass(frozen=True, slots=True)
class WriterStyle:
    placeholder: str = "…"
    cursor: str = " ▌"
    empty_reply: str = "_(The model returned an empty reply.)_"
    # The most platform messages one reply (one choice) may use; text beyond them is not shown
    # (`ReplyWriter.full`), so a runaway reply costs no more than this many messages' layout.
    max_messages: int = 10
    # Room (in the platform's unit) kept free in the last allowed message for a closing notice;
    # a longer notice is cut short there rather than take a message beyond `max_messages`.
    notice_room: int = 300
    # Seconds between two visible updates of this reply; None: the scheduler's interval.
    edit_interval: float | None = None


class ReplyWriter:
    """One choice of one reply; `feed` text, then `finish`; `open` must come first."""

    def __init__(
        self,
        surface: ReplySurface,
        scheduler: EditScheduler,
        *,
        response_number: int = 0,
        style: WriterStyle = WriterStyle(),
        on_visible: Persist | None = None,
        log_extra: Mapping[str, object] | None = None,
    ) -> None:
        self.surface = surface
        self.scheduler = scheduler
        self.response_number = response_number
        self.style = style
        self._on_visible = on_visible
        # The reply's ids (chat, message) for its log lines; JSON logs carry them as fields.
        self._log_extra = log_extra
        # Deltas are kept as parts and joined when the text is read (about once per edit):
        # `text += delta` would copy the whole reply on every delta and churn the allocator.
        self._parts: list[str] = []
        self._text = ""
        # Deltas the layout has not seen yet: it is given only those, never the whole text.
        self._unlaid: list[str] = []
        self._unlaid_chars = 0
        self.notice = ""
        self.messages: list[PostedMessage] = []
        self._shown: list[str] = []
        # Messages that got their final update; every message gets exactly one (it ends a
        # native stream even when its text did not change).
        self._finalized: set[int] = set()
        self._failed_writes = 0
        self._targets_key: tuple[object, ...] | None = None
        self._targets_cache: list[str] = []
        self._layout: Layout | None = None
        self._layout_for: MessageLimit | None = None
        self._per_char = 1  # the most a character measures in the limit's unit
        # `full` needs no layout while fewer unlaid characters than this came (-1: look).
        self._sure_room = -1
        self._settled: list[str] = []  # what the layout's complete segments show: never changes
        # Leading messages that show their settled text, final: no write can concern them again.
        self._stable = 0
        self._lane = Lane(surface.edit_bucket(), interval=style.edit_interval)
        # Shown instead of the placeholder until the first text ("queued", waiting for the LLM).
        self._status = ""
        self._refresh = False
        self._wake = asyncio.Event()
        self._finishing = False
        self._task: asyncio.Task[None] | None = None
        self.visible_updates = 0
        self.rate_limited = 0
        self.first_text_at: float | None = None
        self.final_at: float | None = None
        self.error: str | None = None

    @property
    def failed_writes(self) -> int:
        """Writes the platform refused other than with a 429 (each retried or worked around)."""
        return self._failed_writes

    @property
    def full(self) -> bool:
        """True once the text fed so far outgrew `style.max_messages` messages; later text is
        not shown. Cheap enough to ask after every delta: the text is laid out again only when
        what came since the last layout may not fit in the room left in the growing message."""
        if self._unlaid_chars <= self._sure_room:
            return False  # the hot path: asked after every delta of every reply
        layout = self._current_layout()
        if layout.full or self._unlaid_chars > layout.headroom // self._per_char:
            self._catch_up(layout)
        # Characters that may come before the answer can change; a new limit resets it.
        self._sure_room = -1 if layout.full else layout.headroom // self._per_char
        return layout.full

    @property
    def platform_message_ids(self) -> list[str]:
        return [m.id for m in self.messages]

    async def open(self) -> None:
        """Post the placeholder right away and start the pump."""
        await self._post(self.style.placeholder)
        self._task = asyncio.get_running_loop().create_task(self._pump())

    def adopt(self, message_ids: Sequence[str], text: str) -> None:
        """Continue a reply a dead process left: its messages show `text` laid out, the last one
        still as it streamed. Then `finish` gives the last one its final form (and a notice);
        continuation messages the text needs beyond them are posted as usual."""
        self.messages = [PostedMessage(message_id) for message_id in message_ids]
        self.feed(text)
        targets = self._targets()
        last = len(self.messages) - 1
        # Complete segments never change once followed by another: those messages are final.
        self._shown = [
            targets[i] if i < last and i < len(targets) else "" for i in range(len(self.messages))
        ]
        self._finalized = set(range(min(last, len(targets))))
        self._task = asyncio.get_running_loop().create_task(self._pump())

    async def post_once(self, text: str) -> PostedMessage:
        """Post one complete message (a notice), in the scheduler's order like any first text."""
        await self._post(text)
        self.final_at = self.scheduler.now()
        return self.messages[-1]

    @property
    def text(self) -> str:
        if self._parts:
            self._text += "".join(self._parts)
            self._parts.clear()
        return self._text

    @property
    def has_text(self) -> bool:
        return bool(self._text or self._parts)

    def show_status(self, text: str) -> None:
        """Show `text` in the placeholder until the first words arrive, or below the text so far
        (a tool running) until more text comes; "" takes it away. Not on a native stream: it
        only ever appends, and the platform shows its own progress there."""
        if not self.surface.shows_own_progress and text != self._status:
            self._status = text
            self._wake.set()

    def refresh(self) -> None:
        """Write the last message again even if its text did not change: the surface has
        something of its own to send with it (Slack's task cards on a native stream)."""
        if self.messages and not self._finishing and self.surface.shows_own_progress:
            self._refresh = True
            self._wake.set()

    def feed(self, delta: str) -> None:
        if delta:
            self._status = ""
            self._parts.append(delta)
            self._unlaid.append(delta)
            self._unlaid_chars += len(delta)
            self._wake.set()

    async def finish(self, notice: str = "") -> None:
        """Show the complete text (plus `notice`, e.g. an error) and wait until it is visible."""
        self.notice = notice
        self._finishing = True
        self.scheduler.promote(self._lane)
        self._wake.set()
        if self._task is not None:
            await asyncio.shield(self._task)

    # --- the pump ----------------------------------------------------------------------------

    def _targets(self) -> list[str]:
        # Read several times per write; shown again only when something it depends on changed.
        # The layout follows the growing text, laying out only its tail; once the reply is full,
        # later text is not even looked at.
        layout = self._current_layout()
        self._catch_up(layout)
        key = (
            layout.length,
            self.notice,
            self._finishing,
            self.surface.shows_own_progress,
            layout,
            self._status,
        )
        if key != self._targets_key:
            self._targets_key, self._targets_cache = key, self._lay_out(layout)
        return self._targets_cache

    def _current_layout(self) -> Layout:
        limit = self.surface.message_limit
        if self._layout is None or (limit is not self._layout_for and limit != self._layout_for):
            # A new limit (Slack knows it after the first post) lays the text out afresh.
            self._layout_for, self._settled, self._stable = limit, [], 0
            self._sure_room = -1
            self._per_char = 1 if limit.unit == "chars" else 4  # UTF-8: up to 4 bytes
            self._layout = Layout(
                limit.size,
                reserve=len(self.style.cursor) + 2,
                measure=self._measure(limit),
                max_segments=self.style.max_messages,
                last_reserve=self.style.notice_room,
            )
            self._layout.extend(self.text)
            self._unlaid.clear()
            self._unlaid_chars = 0
        return self._layout

    def _catch_up(self, layout: Layout) -> None:
        """Give the layout the deltas it has not seen (once it is full, it needs none)."""
        if self._unlaid:
            if not layout.full:
                layout.extend("".join(self._unlaid))
            self._unlaid.clear()
            self._unlaid_chars = 0
            self._sure_room = -1  # the room left changed: `full` looks again

    @staticmethod
    def _measure(limit: MessageLimit) -> Callable[[str], int]:
        return utf8_length if limit.unit == "utf8_bytes" else len

    def _lay_out(self, layout: Layout) -> list[str]:
        if not layout.length:
            if self.notice:
                limit = self.surface.message_limit
                return [clip(self.notice, limit.size, self._measure(limit))]
            if self._finishing:
                return [self.style.empty_reply]
            return [self._status or self.style.placeholder]
        settled = self._settled
        settled.extend(segment.final() for segment in layout.complete[len(settled) :])
        shown = list(settled)
        if layout.tail is not None:
            shown.append(self._display(layout.tail))
        if self.notice:
            self._add_notice(shown)
        return shown

    def _display(self, segment: Segment) -> str:
        """The last, growing segment (complete ones always show their final form)."""
        if self._finishing:
            return segment.final()
        if self.surface.shows_own_progress:
            # Append-only streams: show the raw text, which later text only ever extends.
            return segment.text
        shown = segment.while_streaming(self.style.cursor)
        if self._status:
            limit = self.surface.message_limit
            with_status = f"{shown}\n\n{self._status}"
            if self._measure(limit)(with_status) <= limit.size:
                return with_status
        return shown

    def _add_notice(self, shown: list[str]) -> None:
        """The notice goes below the text, after any code block is closed: in the last message
        when it fits, else in a message of its own, but never in one beyond `max_messages` (the
        last allowed message keeps `notice_room` for it)."""
        limit = self.surface.message_limit
        measure = self._measure(limit)
        above = f"{shown[-1]}\n\n"
        fitted = clip(self.notice, limit.size - measure(above), measure)
        if fitted == self.notice or len(shown) >= self.style.max_messages:
            if fitted:
                shown[-1] = above + fitted
        else:
            shown.append(clip(self.notice, limit.size, measure))

    async def _pump(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                while await self._write_next():
                    pass
            except Exception as exc:  # a broken platform must not hang the reply
                log.exception(
                    "reply %s: giving up on visible updates",
                    self.response_number,
                    extra=self._log_extra,
                )
                self.error = f"{type(exc).__name__}: {exc}"
                return
            if self._finishing and not self._wake.is_set():
                if self.final_at is None:
                    self.final_at = self.scheduler.now()
                return

    async def _write_next(self) -> bool:
        """Perform the first write that brings the platform closer to the text; False if none."""
        index = self._first_difference(self._targets())
        if index is None:
            return False
        if index >= len(self.messages):
            targets = self._targets()
            await self._post(targets[index], ends_reply=self._ends_reply(index, targets))
            return True
        targets = self._targets()
        final_segment = self._finishing or index < len(targets) - 1
        if targets[index] == self._shown[index] and not (
            self.surface.shows_own_progress or self.surface.controls_shown
        ):
            # Already showing its final text; only a native stream needs telling that it ended,
            # and a message with a Stop button needs its last write (the button goes).
            self._finalized.add(index)
            return True
        # The surface may switch buckets mid-reply (Slack: native stream -> chat.update).
        self._lane.bucket = self.surface.edit_bucket()
        await self.scheduler.acquire_edit(self._lane, final=final_segment)
        # The text may have grown while we waited for the slot: send the latest.
        targets = self._targets()
        # "final": this message will not change again (a finished reply or a full segment).
        final = self._finishing or index < len(targets) - 1
        try:
            await self.surface.update(
                self.messages[index],
                targets[index],
                final=final,
                ends_reply=self._ends_reply(index, targets),
            )
        except RateLimited as limited:
            self.rate_limited += 1
            # Re-read: the surface may have switched buckets during this very write.
            self.scheduler.penalize(self.surface.edit_bucket(), limited.retry_after)
            return True
        except PlatformUnavailable as exc:
            self._failed_writes += 1
            if self._failed_writes > MAX_TRANSIENT_FAILURES:
                raise
            log.warning(
                "reply %s: edit failed (%s); retrying the same edit",
                index,
                exc,
                extra=self._log_extra,
            )
            self.scheduler.penalize(
                self.surface.edit_bucket(), 2.0**self._failed_writes, learn=False
            )
            return True
        except PlatformError as exc:
            self._failed_writes += 1
            if self._failed_writes > MAX_TRANSIENT_FAILURES:
                raise
            log.warning(
                "reply %s: edit failed (%s); continuing in a new message",
                index,
                exc,
                extra=self._log_extra,
            )
            del self.messages[index:]
            del self._shown[index:]
            self._finalized = {i for i in self._finalized if i < index}
            return True
        finally:
            self._observe()
        self._shown[index] = targets[index]
        if final:
            self._finalized.add(index)
        await self._after_visible(self._finishing and index == len(targets) - 1)
        return True

    def _first_difference(self, targets: list[str]) -> int | None:
        last = len(targets) - 1
        if self._refresh:
            self._refresh = False
            if 0 <= last < len(self._shown) and last not in self._finalized:
                return last
        # The scan starts after the stable messages, so a reply of many messages costs no more
        # per write than a short one.
        for index in range(self._stable, len(targets)):
            target = targets[index]
            if index >= len(self._shown) or self._shown[index] != target:
                return index
            must_be_final = index < last or self._finishing
            if must_be_final and index not in self._finalized:
                return index
            # The last message may still take the notice; a settled one before it is done.
            if index == self._stable and index < min(last, len(self._settled)):
                self._stable += 1
        return None

    def _ends_reply(self, index: int, targets: list[str]) -> bool:
        """Whether a write of message `index` is the response's last (its controls go there)."""
        return self._finishing and index == len(targets) - 1

    async def _post(self, text: str, *, ends_reply: bool = False) -> None:
        bucket = self.surface.post_bucket()
        while True:
            await self.scheduler.acquire(
                bucket, Urgency.FIRST_TEXT, self.scheduler.now(), holder=self._lane
            )
            try:
                message = await self.surface.post(
                    text, response_number=self.response_number, ends_reply=ends_reply
                )
            except RateLimited as limited:
                self.rate_limited += 1
                self.scheduler.penalize(bucket, limited.retry_after)
                continue
            except PlatformUnavailable as exc:
                # A passing failure (network, 5xx): post again after a pause, a few times, unless
                # the post may have landed and the platform could not tell a repeat (Discord's
                # surface sends a nonce, so its posts are always repeatable).
                self._failed_writes += 1
                if self._failed_writes > MAX_TRANSIENT_FAILURES or not exc.repeatable:
                    raise
                log.warning("reply %s: post failed (%s); posting again",
                            self.response_number, exc, extra=self._log_extra)  # fmt: skip
                self.scheduler.penalize(bucket, 2.0**self._failed_writes, learn=False)
                continue
            finally:
                self._observe(bucket_of_post=True)
            break
        self.messages.append(message)
        self._shown.append(text)
        done = ends_reply and not self.surface.shows_own_progress
        if done:  # posted as the reply's end, its controls included: no write follows
            self._finalized.add(len(self.messages) - 1)
        if text != self.style.placeholder:
            await self._after_visible(final=done)

    async def _after_visible(self, final: bool) -> None:
        now = self.scheduler.now()
        self.visible_updates += 1
        if self.has_text and not self._lane.shown_text:
            self._lane.shown_text = True
            self.first_text_at = now
        if final:
            self.final_at = now
        elif self._on_visible is not None:
            await self._on_visible(self)

    def _observe(self, *, bucket_of_post: bool = False) -> None:
        seen = self.surface.take_rate_observation()
        if seen is not None:
            bucket = self.surface.post_bucket() if bucket_of_post else self._lane.bucket
            self.scheduler.observe(bucket, seen)
