"""`SlackReplySurface`: one reply in one Slack thread, streamed natively (chat.startStream /
appendStream / stopStream) or posted and edited (chat.postMessage + chat.update), with the
assistant status ("is thinking…") shown until the reply is done, and notices only its author sees
(chat.postEphemeral).

Posted and edited messages carry a Stop button while the reply streams; the last write of the
reply's last message drops it and, under an answer, adds Slack's feedback buttons (a native
stream gets those from chat.stopStream).

A native stream shows the reply's tool calls as task cards, sent with its next append or stop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.api import SlackCallFailed, SlackUnavailable, call
from adapters.slack.controls import NO_BUTTONS, ReplyButtons, feedback_block, stop_block
from adapters.slack.events import ReplyPlace
from adapters.slack.formatting import message_content
from adapters.slack.streams import NativeStream, StreamBudgets, StreamEnded, TaskChunk, task_chunk
from bridge.config import SlackSettings
from bridge.policy.settings import NativeStreaming
from bridge.ports import (
    MessageLimit,
    PlatformError,
    PostedMessage,
    RateBucket,
    RateLimited,
    RateObservation,
    ReplyEnding,
    ToolActivity,
)
from bridge.scheduler import EditScheduler, Urgency

log = logging.getLogger(__name__)

# chat.update re-sends the whole message; Slack refuses `text` from about 4,000 characters and
# splits a markdown block into several blocks, so keep each message comfortably small.
UPDATE_LIMIT = MessageLimit(3_500, "utf8_bytes")
# A stream takes 12,000 characters per call, and a stream that expires is finished with
# chat.update and a markdown block (12,000 characters). Defusing mentions adds at most one
# character per five ("@here"), so 10,000 leaves room for the worst case.
NATIVE_LIMIT = MessageLimit(10_000, "chars")
# Errors that mean "this workspace or app cannot stream" rather than "this call failed".
STREAMING_UNAVAILABLE = frozenset(
    {"not_allowed", "missing_scope", "unknown_method", "not_allowed_token_type",
     "feature_not_enabled", "no_permission", "method_deprecated"}
)  # fmt: skip
# The endings whose last message gets the feedback buttons.
RATED_ENDINGS = frozenset({ReplyEnding.ANSWERED, ReplyEnding.STOPPED})
FINISHING_ATTEMPTS = 3
MAX_FINISHING_WAIT = 5.0
# New messages in one channel (chat.postMessage, chat.startStream): Slack documents "1 per second"
# with "short bursts >1 allowed", and no figure for the burst. 20: the one public measurement
# (RamblingCookieMonster/PSSlack#52) found a bucket of about 25 that drains at one a second; 20
# stays under it and lets twenty threads of a busy channel start at once instead of one a second.
# A channel that allows less refuses the excess with 429 + Retry-After: each refused post is sent
# again once, after it, and the scheduler learns the smaller burst for that channel.
POST_RATE = (1, 1.0)  # sustained: one post per second
POST_BURST = 20


class StreamingSupport:
    """Per process: which workspaces turned out unable to stream natively. Whether a reply tries
    is its own setting (`native_streaming`, resolved per channel by the policy)."""

    def __init__(self) -> None:
        self._unavailable: set[str] = set()

    def should_try(self, team: str, mode: NativeStreaming) -> bool:
        if mode == "auto":
            return team not in self._unavailable
        return mode == "always"

    def mark_unavailable(self, team: str, code: str) -> None:
        if team not in self._unavailable:
            log.info(
                "slack: native streaming unavailable in %s (%s); using chat.update", team, code
            )
        self._unavailable.add(team)


class SlackReplySurface:
    """The ReplySurface for one inbound Slack message."""

    def __init__(
        self,
        client: AsyncWebClient,
        settings: SlackSettings,
        place: ReplyPlace,
        support: StreamingSupport,
        *,
        native_streaming: NativeStreaming = "auto",
        placeholder: str,
        scheduler: EditScheduler,
        buttons: ReplyButtons = NO_BUTTONS,
        on_posted: Callable[[str], None] | None = None,
    ) -> None:
        self._client = client
        self._scheduler = scheduler
        self._budgets = StreamBudgets(scheduler, place.team)
        self._settings = settings
        self._place = place
        self._support = support
        self._mode = native_streaming
        self._placeholder = placeholder
        self._status_text = settings.status_text
        self._native: bool | None = None  # decided by the first post
        self._limit = UPDATE_LIMIT
        self._streams: dict[str, NativeStream] = {}
        self._typing = False
        # Whether our status may be on screen: set by us, not yet cleared by a post or by us.
        self._status_shown = False
        # Messages of a dead process's reply (crash recovery): they may still be streaming.
        self._adopted: set[str] = set()
        self._buttons = buttons
        self._on_posted = on_posted
        self._ending: ReplyEnding | None = None
        self._stop_shown = False  # a message of the reply may show the Stop button
        self._newest: dict[int, str] = {}  # response number -> its newest message
        # Task cards (tool calls) as Slack last got them, and those changed since, by id.
        self._tasks_sent: dict[str, TaskChunk] = {}
        self._tasks_pending: dict[str, TaskChunk] = {}

    def adopt(self, message_ids: Sequence[str], limit: MessageLimit | None) -> None:
        """Finish a reply a dead process left: with chat.update, after stopping any stream it
        left open, laid out as it was; its status may still show, so it is cleared at the end."""
        self._adopted.update(message_ids)
        self._native = False
        self._limit = limit or UPDATE_LIMIT
        self._status_shown = True
        # The dead process may have left a Stop button on them; the last write takes it away.
        self._stop_shown = self._buttons.stop
        if message_ids:
            self._newest[0] = message_ids[-1]

    # --- what the writer reads --------------------------------------------------------------

    @property
    def message_limit(self) -> MessageLimit:
        return self._limit

    @property
    def shows_own_progress(self) -> bool:
        return bool(self._native)

    @property
    def controls_shown(self) -> bool:
        # The feedback buttons come with a last write too, even when the text is already shown.
        return self._stop_shown or self._buttons.feedback

    def end_reply(self, ending: ReplyEnding) -> None:
        self._ending = ending

    def show_tools(self, activity: Sequence[ToolActivity]) -> bool:
        """Task cards on an open native stream, sent with its next append; anything else
        (chat.update, no stream yet, a stream that ended) has no place for them."""
        if not (self._native and any(stream.open for stream in self._streams.values())):
            return False
        for chunk in map(task_chunk, activity):
            if self._tasks_sent.get(chunk["id"]) == chunk:
                self._tasks_pending.pop(chunk["id"], None)
            else:
                self._tasks_pending[chunk["id"]] = chunk
        return True

    def post_bucket(self) -> RateBucket:
        key = f"slack:chat.postMessage:{self._place.team}:{self._place.channel}"
        return RateBucket(key, *POST_RATE, burst=POST_BURST)

    def edit_bucket(self) -> RateBucket:
        team = self._place.team
        if self._native:
            return RateBucket(f"slack:chat.appendStream:{team}", 90, 60.0)  # Tier 4
        return RateBucket(f"slack:chat.update:{team}", self._settings.update_rate_per_minute, 60.0)

    def take_rate_observation(self) -> RateObservation | None:
        return None  # Slack sends no X-RateLimit-* headers, only Retry-After on a 429

    def status_bucket(self) -> RateBucket:
        team, limit = self._place.team, self._settings.status_rate_per_minute
        return RateBucket(f"slack:assistant.threads.setStatus:{team}", limit, 60.0)

    # --- typing ------------------------------------------------------------------------------

    async def start_typing(self, status: str = "") -> None:
        self._typing = True
        self._status_text = status or self._settings.status_text
        # Cosmetic twice over: the placeholder or stream that follows at once clears it on Slack
        # (then `_keep_status` sets it again), so it only takes a quiet window's spare room.
        await self._show_status(Urgency.BACKGROUND)

    async def stop_typing(self) -> None:
        """The reply is over: close streams the writer left open, then clear the status."""
        self._typing = False
        for stream in self._streams.values():
            if stream.open:
                await self._retrying(functools.partial(self._finish_stream, stream), "finish")
        if self._status_shown:
            await self._retrying(self._clear_status, "clear the status")

    async def _retrying(self, attempt: Callable[[], Awaitable[None]], what: str) -> None:
        """The end of a reply must reach Slack: wait out a few 429s instead of giving up."""
        for number in range(FINISHING_ATTEMPTS):
            try:
                await attempt()
                return
            except RateLimited as limited:
                if number + 1 < FINISHING_ATTEMPTS:
                    await asyncio.sleep(min(limited.retry_after, MAX_FINISHING_WAIT))
            except PlatformError as exc:
                log.warning("slack: could not %s in %s: %s", what, self._place, exc)
                return
        log.warning("slack: could not %s in %s: still rate limited", what, self._place)

    async def _show_status(self, urgency: Urgency) -> None:
        """Set the status if the workspace's setStatus budget has room now: shown late, or at the
        cost of a 429, it would be worth less than the calls that end replies' statuses."""
        bucket = self.status_bucket()
        if not self._scheduler.try_acquire(bucket, urgency):
            log.debug("slack: no status in %s: the workspace's budget is in use", self._place)
            return
        # On screen from the moment the call may have reached Slack (a lost answer included),
        # until Slack says it refused it: a status that may show is always cleared at the end.
        self._status_shown = True
        try:
            await self._set_status(self._status_text)
        except RateLimited as limited:
            self._status_shown = False
            self._scheduler.penalize(bucket, limited.retry_after)
            log.info("slack: could not set the status in %s: %s", self._place, limited)
        except PlatformError as exc:
            self._status_shown = False
            log.info("slack: could not set the status in %s: %s", self._place, exc)

    async def _clear_status(self) -> None:
        # Waits its turn: a status left on a finished reply reads "is thinking…" for 2 minutes.
        bucket = self.status_bucket()
        await self._scheduler.acquire(bucket, Urgency.FINAL, self._scheduler.now())
        try:
            await self._set_status("")
        except RateLimited as limited:
            self._scheduler.penalize(bucket, limited.retry_after)
            raise
        self._status_shown = False

    async def _set_status(self, status: str) -> None:
        await call(
            "assistant.threads.setStatus",
            str(self._place),
            self._client.assistant_threads_setStatus(
                channel_id=self._place.channel,
                thread_ts=self._place.thread_ts,
                status=status,
                loading_messages=(self._settings.loading_messages or None) if status else None,
            ),
        )

    async def _keep_status(self) -> None:
        # Slack clears the status when the app posts in the thread; the reply is not done yet.
        self._status_shown = False
        if self._typing:
            await self._show_status(Urgency.PROGRESS)

    # --- posting -----------------------------------------------------------------------------

    async def post(
        self, text: str, *, response_number: int, ends_reply: bool = False
    ) -> PostedMessage:
        if self._native is None:
            self._native = self._support.should_try(self._place.team, self._mode)
            self._limit = NATIVE_LIMIT if self._native else UPDATE_LIMIT
        ts: str | None = None
        if self._native:
            ts = await self._start_stream(text)
            if ts is None:
                self._native = False
                if not self._streams:  # nothing streamed yet: this reply is laid out afresh
                    self._limit = UPDATE_LIMIT
        if ts is None:
            # Stop while the reply streams; posted as its end, the feedback buttons at once.
            stop = self._buttons.stop and self._ending is None and not ends_reply
            controls = [stop_block()] if stop else self._feedback(ends_reply)
            answer = await call(
                "chat.postMessage",
                str(self._place),
                self._client.chat_postMessage(
                    channel=self._place.channel,
                    thread_ts=self._place.thread_ts,
                    unfurl_links=False,
                    unfurl_media=False,
                    **_with_blocks(message_content(text), controls),
                ),
            )
            ts = str(answer["ts"])
            self._stop_shown = self._stop_shown or stop
        self._newest[response_number] = ts
        if self._on_posted is not None:
            self._on_posted(ts)
        await self._keep_status()
        return PostedMessage(ts)

    async def _start_stream(self, text: str) -> str | None:
        """The new stream's ts, or None when this reply must use chat.postMessage instead."""
        place = self._place
        if self._mode != "always" and not self._budgets.start_now():
            # The workspace's stream starts are spent for this minute: rather than wait for
            # one, this reply is posted and edited (chat.update has a budget of its own).
            log.info("slack: no stream start left this minute in %s; posting instead", place)
            return None
        try:
            stream = await NativeStream.start(
                self._client, place, "" if text == self._placeholder else text, self._budgets
            )
        except SlackUnavailable as exc:
            if not exc.repeatable:
                raise  # the stream may have started: a post instead could show the text twice
            log.warning("slack: no native stream in %s (%s); posting instead", place, exc.code)
            return None
        except SlackCallFailed as exc:
            if self._mode == "always":
                raise
            if exc.code in STREAMING_UNAVAILABLE:
                self._support.mark_unavailable(place.team, exc.code)
            else:
                log.warning("slack: no native stream in %s (%s); posting instead", place, exc.code)
            return None
        self._streams[stream.ts] = stream
        return stream.ts

    # --- editing -----------------------------------------------------------------------------

    async def update(
        self, message: PostedMessage, text: str, *, final: bool, ends_reply: bool = False
    ) -> None:
        if message.id in self._adopted:
            await self._stop_adopted_stream(message.id)
        feedback = self._feedback(ends_reply)
        stream = self._streams.get(message.id)
        if stream is not None and stream.open:
            if self._native and final and not self._budgets.stop_now(stream.ts):
                # The workspace's stops are spent for now: the text goes out at once as an
                # append (this write holds the append budget), the stop when its tier has room.
                await self._extend(stream, text, final=False)
            if self._native and await self._extend(stream, text, final=final, blocks=feedback):
                return
            if stream.open:  # the text no longer extends what the stream shows (a split)
                await stream.stop()
        stop = self._buttons.stop and not final and self._ending is None
        await self._chat_update(message.id, text, [stop_block()] if stop else feedback)
        self._stop_shown = self._stop_shown or stop

    def _feedback(self, ends_reply: bool) -> list[dict[str, Any]]:
        """The feedback buttons, for the last write of a response's last message."""
        if not (ends_reply and self._buttons.feedback and self._ending in RATED_ENDINGS):
            return []
        return [feedback_block()]

    async def _extend(
        self,
        stream: NativeStream,
        text: str,
        *,
        final: bool,
        blocks: Sequence[dict[str, Any]] = (),
    ) -> bool:
        """Extend the stream, the task cards that changed since the last write going with it."""
        tasks = list(self._tasks_pending.values())
        if not final and not stream.shown and text == self._placeholder:
            # The writer shows its placeholder until the first words (a write that carries task
            # cards before them): a native stream shows its own progress, never that text.
            text = ""
        try:
            extended = await stream.extend(text, final=final, blocks=blocks, tasks=tasks)
        except StreamEnded as ended:
            # Expired (message_not_in_streaming_state) or broken: the rest of the reply goes
            # through chat.update on the same message, with the whole text (and no task cards:
            # show_tools says so from now on, and the responder shows a status line instead).
            log.warning("slack: stream in %s ended (%s); using chat.update", self._place, ended)
            self._native = False
            return False
        if extended:
            for chunk in tasks:
                self._tasks_sent[chunk["id"]] = chunk
                # A newer state recorded while the call was under way stays pending.
                if self._tasks_pending.get(chunk["id"]) is chunk:
                    del self._tasks_pending[chunk["id"]]
        return extended

    async def _finish_stream(self, stream: NativeStream) -> None:
        """Show a stream's held-back tail and stop it (the writer sends no final edit when the
        final text equals the last one it streamed)."""
        feedback = self._feedback(stream.ts in self._newest.values())
        if not await self._extend(stream, stream.last_text, final=True, blocks=feedback):
            if stream.open:
                await stream.stop()
            await self._chat_update(stream.ts, stream.last_text or self._placeholder, feedback)

    async def _stop_adopted_stream(self, ts: str) -> None:
        # A stream a crashed process left open keeps the message "streaming" until Slack expires
        # it; stopping one that is not streaming answers an error, which is fine.
        try:
            await self._budgets.stop(
                ts,
                lambda: call(
                    "chat.stopStream",
                    str(self._place),
                    self._client.chat_stopStream(channel=self._place.channel, ts=ts),
                ),
            )
        except SlackCallFailed as exc:
            log.debug("slack: no stream to stop in %s (%s)", self._place, exc.code)
        self._adopted.discard(ts)

    async def _chat_update(
        self, ts: str, text: str, controls: Sequence[dict[str, Any]] = ()
    ) -> None:
        """Show `text` (and `controls` below it); any earlier controls go."""
        content = _with_blocks(message_content(text), controls)
        await call(
            "chat.update",
            str(self._place),
            self._client.chat_update(channel=self._place.channel, ts=ts, **content),
        )

    # --- notices -----------------------------------------------------------------------------

    async def notify(self, text: str) -> None:
        """A notice only the author sees, where they wrote: in the thread if the message was in
        one (Slack shows an ephemeral message in a thread only once the thread has replies)."""
        place = self._place
        await call(
            "chat.postEphemeral",
            str(place),
            self._client.chat_postEphemeral(
                channel=place.channel,
                user=place.recipient_user,
                thread_ts=place.thread_ts if place.existing_thread else None,
                **message_content(text),
            ),
        )

    # --- the assistant thread ----------------------------------------------------------------

    async def set_title(self, title: str) -> None:
        # Titles belong to the AI app's DM threads; a channel thread has no title to set.
        if not self._place.is_dm:
            return
        try:
            await call(
                "assistant.threads.setTitle",
                str(self._place),
                self._client.assistant_threads_setTitle(
                    channel_id=self._place.channel, thread_ts=self._place.thread_ts, title=title
                ),
            )
        except (RateLimited, PlatformError) as exc:
            log.info("slack: no title for %s: %s", self._place, exc)


def _with_blocks(content: dict[str, Any], more: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`message_content` with blocks added after the text (the text and its fallback unchanged)."""
    if more:
        content["blocks"] = [*content["blocks"], *more]
    return content
