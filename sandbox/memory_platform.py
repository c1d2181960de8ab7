"""An in-process platform that records what it was asked to show: the fake behind the core's tests
and the responder benchmark. It can answer 429s, fail edits, and take time per write.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bridge.ports import (
    MessageLimit,
    PermissionDenied,
    PlatformError,
    PlatformUnavailable,
    PostedMessage,
    RateBucket,
    RateLimited,
    RateObservation,
    ReplyEnding,
    ToolActivity,
)

# --- platform --------------------------------------------------------------------------------


@dataclass(slots=True)
class Write:
    at: float
    kind: str  # "post" | "update"
    message_id: str
    text: str  # "" when the surface keeps lengths only
    final: bool = False
    length: int = 0


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
        keep_text: bool = True,
        keep_writes: bool = True,
        observer: Callable[[Write], None] | None = None,
    ) -> None:
        self.message_limit = MessageLimit(limit)
        self.shows_own_progress = False
        self.controls_shown = False  # no buttons here; `endings` records what end_reply was told
        self.endings: list[ReplyEnding] = []
        self.tool_activity: list[tuple[ToolActivity, ...]] = []  # each show_tools call
        self._edit_bucket = edit_bucket or RateBucket(f"edit:{name}", 1000, 1.0)
        self._post_bucket = post_bucket or RateBucket(f"post:{name}", 1000, 1.0)
        self.latency = latency
        self.writes: list[Write] = []
        self.notices: list[str] = []  # notify(): not replies, shown to the author only
        self.statuses: list[str] = []  # start_typing's status texts ("" for the usual one)
        self.shown: dict[str, str] = {}
        self.typing: list[tuple[float, bool]] = []
        self.titles: list[str] = []
        self.refuse_next: list[float] = []  # retry_after of the next refused updates
        self.fail_updates = False
        self.unavailable_next = 0  # the next N updates fail as a network error would
        self.posts_unavailable_next = 0  # the next N posts fail likewise (and are not shown)
        self.deny_posts = False  # posts fail as in a channel the bot may not write in
        self.observation: RateObservation | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self.name = name
        # A benchmark of a thousand replies would measure this recording, not the bridge: it
        # keeps counts and tells `observer` about each write instead.
        self.keep_text = keep_text
        self.keep_writes = keep_writes
        self.observer = observer
        self.posts = 0
        self.update_count = 0

    def post_bucket(self) -> RateBucket:
        return self._post_bucket

    def end_reply(self, ending: ReplyEnding) -> None:
        self.endings.append(ending)

    def show_tools(self, activity: Sequence[ToolActivity]) -> bool:
        self.tool_activity.append(tuple(activity))
        return False  # no native task cards here: the status line shows the tools

    def edit_bucket(self) -> RateBucket:
        return self._edit_bucket

    async def start_typing(self, status: str = "") -> None:
        self.typing.append((asyncio.get_running_loop().time(), True))
        self.statuses.append(status)

    async def stop_typing(self) -> None:
        self.typing.append((asyncio.get_running_loop().time(), False))

    @property
    def typing_now(self) -> bool:
        return bool(self.typing) and self.typing[-1][1]

    async def post(
        self, text: str, *, response_number: int, ends_reply: bool = False
    ) -> PostedMessage:
        await self._enter()
        try:
            if self.deny_posts:
                raise PermissionDenied("missing permissions")
            if self.posts_unavailable_next:
                self.posts_unavailable_next -= 1
                raise PlatformUnavailable("connection refused")
            message_id = f"{self.name}-{next(_MESSAGE_IDS)}"
            self.posts += 1
            if self.keep_text:
                self.shown[message_id] = text
            self._record("post", message_id, text, False)
            return PostedMessage(message_id)
        finally:
            self.in_flight -= 1

    async def update(
        self, message: PostedMessage, text: str, *, final: bool, ends_reply: bool = False
    ) -> None:
        await self._enter()
        try:
            if self.refuse_next:
                raise RateLimited(self.refuse_next.pop(0))
            if self.unavailable_next:
                self.unavailable_next -= 1
                raise PlatformUnavailable("connection reset")
            if self.fail_updates:
                raise PlatformError("message_not_found")
            assert len(text) <= self.message_limit.size, len(text)
            self.update_count += 1
            if self.keep_text:
                self.shown[message.id] = text
            self._record("update", message.id, text, final)
        finally:
            self.in_flight -= 1

    async def notify(self, text: str) -> None:
        await self._enter()
        try:
            self.notices.append(text)
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

    def _record(self, kind: str, message_id: str, text: str, final: bool) -> None:
        kept = text if self.keep_text else ""
        write = Write(self._now(), kind, message_id, kept, final, len(text))
        if self.keep_writes:
            self.writes.append(write)
        if self.observer is not None:
            self.observer(write)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def updates(self) -> list[Write]:
        return [w for w in self.writes if w.kind == "update"]

    def visible_text(self) -> str:
        """Everything the reply's messages show, in order, joined like a reader sees it."""
        return "\n".join(self.shown[k] for k in sorted(self.shown, key=_message_number))


# Platform message ids are unique per channel on every platform, so the fake's are global.
_MESSAGE_IDS = itertools.count(1)


def _message_number(message_id: str) -> int:
    return int(message_id.rsplit("-", 1)[1])
