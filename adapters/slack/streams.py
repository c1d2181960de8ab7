"""One natively streamed Slack message (chat.startStream / appendStream / stopStream).

A stream can only grow: it appends what is new, holds back a tail that may still become a
mention (`<`, `@he`, `<!cha`), and says when a text is no longer an extension of what it shows.
Everything goes as `chunks`, text included: Slack locks a stream to the form of its first content
(`markdown_text` or `chunks`, `streaming_mode_mismatch` after), and task cards exist only as chunks.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.api import SlackCallFailed, call
from adapters.slack.events import ReplyPlace
from adapters.slack.formatting import neutralise_mentions, settled_length
from bridge.ports import RateBucket, ToolActivity
from bridge.scheduler import EditScheduler, Urgency

log = logging.getLogger(__name__)

# Slack documents 256 characters for a task card's title, details and output.
TASK_FIELD_LIMIT = 256

# A `task_update` chunk: {"type", "id", "title", "status", "details"?}.
TaskChunk = dict[str, str]

# Starting and stopping a stream have tiers of their own per workspace, apart from the appends'
# (Tier 4, the writer's edit budget): chat.startStream about 50 a minute, chat.stopStream Tier 2,
# about 20. Kept a tenth below, as chat.update's 45 of 50: a call granted now may arrive a little
# later, beside ones granted after it.
START_RATE = 45
STOP_RATE = 18

T = TypeVar("T")


class StreamBudgets:
    """A reply's share of its workspace's budgets for starting and stopping streams, in the
    shared scheduler. A start or stop may be taken ahead (`start_now`, `stop_now`): when there
    is no room at that moment, the caller can do something better than wait."""

    def __init__(self, scheduler: EditScheduler, team: str) -> None:
        self._scheduler = scheduler
        self._starts = RateBucket(f"slack:chat.startStream:{team}", START_RATE, 60.0)
        self._stops = RateBucket(f"slack:chat.stopStream:{team}", STOP_RATE, 60.0)
        self._taken: set[str] = set()  # "start", or a stream's ts: taken ahead

    def start_now(self) -> bool:
        return self._take_now(self._starts, Urgency.FIRST_TEXT, "start")

    def stop_now(self, ts: str) -> bool:
        return self._take_now(self._stops, Urgency.FINAL, ts)

    def _take_now(self, bucket: RateBucket, urgency: Urgency, key: str) -> bool:
        if key in self._taken:
            return True
        if self._scheduler.try_acquire(bucket, urgency):
            self._taken.add(key)
            return True
        return False

    async def start(self, make_call: Callable[[], Awaitable[T]]) -> T:
        return await self._call(self._starts, Urgency.FIRST_TEXT, "start", make_call)

    async def stop(self, ts: str, make_call: Callable[[], Awaitable[T]]) -> T:
        return await self._call(self._stops, Urgency.FINAL, ts, make_call)

    async def _call(
        self, bucket: RateBucket, urgency: Urgency, key: str, make_call: Callable[[], Awaitable[T]]
    ) -> T:
        taken = key in self._taken
        self._taken.discard(key)
        return await self._scheduler.call_within(bucket, urgency, make_call, taken=taken)


def task_chunk(activity: ToolActivity) -> TaskChunk:
    """A tool call as a task card (timeline mode: one card per id, updated in place)."""
    # Slack's chunk types require an id and a title, and a refused append would end our use
    # of the stream: a call some server left without an id is known by its name.
    title = _cut(activity.title) or "tool"
    chunk = {
        "type": "task_update",
        "id": activity.id or title,
        "title": title,
        "status": activity.status,
    }
    if activity.detail:
        chunk["details"] = _cut(activity.detail)
    return chunk


def _cut(text: str) -> str:
    # A card's title is the model's tool name and its details a tool's error: untrusted text,
    # defused like any reply text before it can reach the platform.
    text = neutralise_mentions(text)
    return text if len(text) <= TASK_FIELD_LIMIT else text[: TASK_FIELD_LIMIT - 1] + "…"


def _content(text: str, tasks: Sequence[TaskChunk] = ()) -> list[dict[str, str]] | None:
    """The chunks of one call: task cards first, then the text; None when there is nothing."""
    chunks: list[dict[str, str]] = [*tasks]
    if text:
        chunks.append({"type": "markdown_text", "text": text})
    return chunks or None


class StreamEnded(Exception):
    """The stream takes no more text (expired after about 5 minutes, or failed)."""


class NativeStream:
    def __init__(
        self,
        client: AsyncWebClient,
        place: ReplyPlace,
        ts: str,
        shown: str,
        budgets: StreamBudgets,
    ) -> None:
        self._client = client
        self._place = place
        self._budgets = budgets
        self.ts = ts
        self.shown = shown  # the (mention-defused) text Slack shows so far
        self.last_text = ""  # the latest complete text asked for, held-back tail included
        self.open = True

    @classmethod
    async def start(
        cls, client: AsyncWebClient, place: ReplyPlace, text: str, budgets: StreamBudgets
    ) -> NativeStream:
        """Start streaming `text` ("" for an empty message) as a reply in the thread, once the
        workspace's budget for starts has room.

        Raises RateLimited or SlackCallFailed (e.g. missing_scope when the app cannot stream).
        """
        shown = neutralise_mentions(text[: settled_length(text)])
        answer = await budgets.start(
            lambda: call(
                "chat.startStream",
                str(place),
                client.chat_startStream(
                    channel=place.channel,
                    thread_ts=place.thread_ts,
                    chunks=_content(shown),
                    recipient_team_id=place.recipient_team,
                    recipient_user_id=place.recipient_user,
                ),
            )
        )
        stream = cls(client, place, str(answer["ts"]), shown, budgets)
        stream.last_text = text
        return stream

    async def extend(
        self,
        text: str,
        *,
        final: bool,
        blocks: Sequence[dict[str, Any]] = (),
        tasks: Sequence[TaskChunk] = (),
    ) -> bool:
        """Show `text` and `tasks` (task cards, sent before the text's new part), and stop, if
        `final`, with `blocks` under it (the feedback buttons); False when `text` does not extend
        what is shown (nothing was sent, not even `tasks`).

        Raises RateLimited (nothing changed: retry later) or StreamEnded (the stream is closed).
        """
        target = text if final else text[: settled_length(text)]
        wanted = neutralise_mentions(target)
        if wanted.startswith(self.shown):
            delta = wanted[len(self.shown) :]
        elif not final and self.shown.startswith(wanted):
            wanted, delta = self.shown, ""  # nothing settled beyond what is shown yet
        else:
            return False
        chunks = _content(delta, tasks)
        try:
            if final:
                await self._stop(chunks, blocks)
            elif chunks:
                await call(
                    "chat.appendStream",
                    str(self._place),
                    self._client.chat_appendStream(
                        channel=self._place.channel, ts=self.ts, chunks=chunks
                    ),
                )
        except SlackCallFailed as exc:
            self.open = False
            raise StreamEnded(exc.code) from exc
        self.shown, self.last_text = wanted, text
        return True

    async def stop(self) -> None:
        """End the stream as it is; a stream that already ended is fine."""
        try:
            await self._stop(None)
        except SlackCallFailed as exc:
            log.info("slack: stream in %s already ended (%s)", self._place, exc.code)
            self.open = False

    async def _stop(
        self, chunks: list[dict[str, str]] | None, blocks: Sequence[dict[str, Any]] = ()
    ) -> None:
        await self._budgets.stop(
            self.ts,
            lambda: call(
                "chat.stopStream",
                str(self._place),
                self._client.chat_stopStream(
                    channel=self._place.channel,
                    ts=self.ts,
                    chunks=chunks,
                    blocks=list(blocks) or None,
                ),
            ),
        )
        self.open = False
