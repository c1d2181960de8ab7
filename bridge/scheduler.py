"""The process-wide edit scheduler: every visible write of every reply asks it first.

Two limits apply to each write: the reply's own minimum interval between visible updates, and the
budget of the rate bucket the platform declared for it (a Slack workspace's chat.update tier, a
Discord channel's edit bucket). A bucket is a sliding window of `limit` grants per `period`, which
can also be blocked outright by a 429's Retry-After or by headers that say nothing remains. When a
bucket is short, waiting replies are served by need: a reply that shows no text yet first, then a
finished reply's final text, then whichever reply has gone longest without an update.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum

from bridge.ports import RateBucket, RateObservation

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class Urgency(IntEnum):
    """Lower goes first when a bucket is short."""

    FIRST_TEXT = 0
    FINAL = 1
    PROGRESS = 2


@dataclass
class _Bucket:
    limit: int
    period: float
    grants: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0
    waiters: list[tuple[tuple[int, float, int], asyncio.Future[None]]] = field(default_factory=list)
    timer: asyncio.Task[None] | None = None
    granted: int = 0
    throttled: int = 0

    def next_free(self, now: float) -> float:
        """The earliest time a grant fits the window and no block is in force."""
        horizon = now - self.period
        while self.grants and self.grants[0] <= horizon:
            self.grants.popleft()
        start = max(now, self.blocked_until)
        if len(self.grants) < self.limit:
            return start
        return max(start, self.grants[len(self.grants) - self.limit] + self.period)


@dataclass
class Lane:
    """One reply's place in the scheduler: when it last wrote, and whether it has shown text."""

    bucket: RateBucket
    last_write: float = float("-inf")
    shown_text: bool = False


class EditScheduler:
    """Shared by every reply in the process. Time is injected so tests need not sleep."""

    def __init__(
        self, *, interval: float, clock: Clock | None = None, sleep: Sleep | None = None
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._sleep = sleep or asyncio.sleep
        self._buckets: dict[str, _Bucket] = {}
        self._seq = itertools.count()

    def now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    # --- buckets -----------------------------------------------------------------------------

    def _bucket(self, spec: RateBucket) -> _Bucket:
        bucket = self._buckets.get(spec.key)
        if bucket is None:
            bucket = self._buckets[spec.key] = _Bucket(spec.limit, spec.period)
        return bucket

    def penalize(self, spec: RateBucket, retry_after: float) -> None:
        """A write in this bucket got a 429: nobody writes to it until Retry-After has passed."""
        bucket = self._bucket(spec)
        bucket.throttled += 1
        bucket.blocked_until = max(bucket.blocked_until, self.now() + max(retry_after, 0.0))

    def observe(self, spec: RateBucket, seen: RateObservation) -> None:
        """Adopt what the platform's headers said about the bucket (never a guess alone)."""
        bucket = self._bucket(spec)
        now = self.now()
        if seen.limit > 0:
            bucket.limit = seen.limit
            if seen.remaining == seen.limit - 1 and seen.reset_after > 0:
                # The first write of a fresh window: its reset time is the window's length.
                bucket.period = seen.reset_after
        if seen.remaining <= 0:
            bucket.blocked_until = max(bucket.blocked_until, now + seen.reset_after)
        # Our own grant count may be behind what the platform counted (other writers, restarts).
        used = max(seen.limit - seen.remaining, 0)
        while len(bucket.grants) < min(used, bucket.limit):
            bucket.grants.appendleft(now)

    def stats(self, key: str) -> tuple[int, int]:
        """(grants, 429s) seen for a bucket key."""
        bucket = self._buckets.get(key)
        return (0, 0) if bucket is None else (bucket.granted, bucket.throttled)

    # --- acquiring ---------------------------------------------------------------------------

    async def acquire(self, spec: RateBucket, urgency: Urgency, waited_since: float) -> None:
        """Wait for one write in `spec`'s bucket; `waited_since` orders equally urgent writers."""
        bucket = self._bucket(spec)
        now = self.now()
        if not bucket.waiters and bucket.next_free(now) <= now:
            self._grant(bucket, now)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(bucket.waiters, ((int(urgency), waited_since, next(self._seq)), future))
        self._arm(bucket)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # Granted but nobody will write: the grant is spent, which errs on the safe side.
                pass
            raise

    async def acquire_edit(self, lane: Lane, *, final: bool) -> None:
        """Wait until `lane` may write: its interval has passed and its bucket has room."""
        gap = lane.last_write + self.interval - self.now()
        if gap > 0:
            await self._sleep(gap)
        if not lane.shown_text:
            urgency = Urgency.FIRST_TEXT
        else:
            urgency = Urgency.FINAL if final else Urgency.PROGRESS
        await self.acquire(lane.bucket, urgency, lane.last_write)
        lane.last_write = self.now()

    def _grant(self, bucket: _Bucket, now: float) -> None:
        bucket.grants.append(now)
        bucket.granted += 1

    def _arm(self, bucket: _Bucket) -> None:
        if bucket.timer is None or bucket.timer.done():
            bucket.timer = asyncio.get_running_loop().create_task(self._serve(bucket))

    async def _serve(self, bucket: _Bucket) -> None:
        """Hand out grants to waiters in urgency order as the window allows, then exit."""
        while bucket.waiters:
            now = self.now()
            free_at = bucket.next_free(now)
            if free_at > now:
                await self._sleep(free_at - now)
                continue
            _, future = heapq.heappop(bucket.waiters)
            if future.done():  # its writer was cancelled while waiting
                continue
            self._grant(bucket, now)
            future.set_result(None)
            # Let the granted writer run before the next grant is considered.
            await asyncio.sleep(0)
