"""The process-wide edit scheduler: every visible write of every reply asks it first.

Two limits apply to each write: the reply's own minimum interval between visible updates, and the
budget of the rate bucket the platform declared for it (a Slack workspace's chat.update tier, a
Discord channel's edit bucket, and, through `RateBucket.within`, a wider budget it also draws from,
such as Discord's per-bot global limit). A bucket is a sliding window of `limit` grants per
`period`, or, when it declares a `burst`, a bucket that holds that many grants and refills at
`limit` per `period` (Slack's posts in a channel: a short burst, then one a second). Either can
also be blocked outright by a 429's Retry-After or by headers that say nothing remains. A 429 in a
burst bucket also teaches it that it holds one grant less than assumed (see `_Bucket.refused`).
When a bucket is short, waiting writes are served by need: a reply that shows no text yet first,
then a finished reply's final text, then whichever reply has gone longest without an update, then
cosmetic requests (a typing indicator).

While several replies share a bucket, progress updates are spaced by the window's average
(`period / limit`) instead of taking every slot the moment it frees: slots then free one at a
time, so a finished reply's final text (or a new reply's first text) waits for the next of them,
not for a whole window that a burst of progress filled at once. Cosmetic requests only use a
window's first eighth, so a burst of new replies shows its placeholders and first texts before its
typing indicators take the rest.

Buckets are keyed per channel or workspace, so a bot in thousands of channels would keep one for
each for ever: a bucket that holds nothing the next write needs (nobody waits, no block, an empty
window) is dropped by a sweep that only looks at buckets unused for a while (see `_sweep`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TypeVar

from bridge.ports import RateBucket, RateLimited, RateObservation

T = TypeVar("T")

# How often, at most, idle buckets are looked for, and which ones: those unused for this long.
SWEEP_EVERY = 10.0
# Buckets looked at per write while a sweep lasts, so no write pays for ten thousand at once.
SWEEP_BATCH = 500
# Learned limits kept for dropped buckets (least recently dropped forgotten first).
LEARNED_KEYS = 4096
# Once a platform refused a burst bucket's write, the bucket keeps its pace this much slower than
# declared: the platform counts when writes arrive, and two sent exactly one spacing apart may
# arrive closer than that (network jitter), which would cost the same write a second 429.
PACE_MARGIN = 0.05

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


# Progress updates that want more than a window holds leave it this share (1 in 4) for first
# and final texts; a window of fewer than four writes keeps no reserve.
PROGRESS_RESERVE = 4


class Urgency(IntEnum):
    """Lower goes first when a bucket is short."""

    FIRST_TEXT = 0
    FINAL = 1
    PROGRESS = 2
    BACKGROUND = 3  # cosmetic (a typing indicator): only while the window is an eighth used


# (urgency, waiting since, arrival order), the waiter's future, the lane it writes for (or 0).
_Waiter = tuple[tuple[int, float, int], asyncio.Future[None], int]


@dataclass
class _Bucket:
    limit: int
    period: float
    # The spec's (limit, period, burst), before the platform's headers or 429s corrected them.
    declared: tuple[int, float, int]
    # 0: a sliding window of `limit` per `period`. Above 0: the grants it holds when full; it
    # refills one every `period / limit` (a token bucket).
    burst: int = 0
    # A burst bucket's state in one number (GCRA's "theoretical arrival time"): when it will be
    # full again. Each grant adds one spacing from max(now, full_at); a grant fits while at most
    # burst - 1 spacings are owed.
    full_at: float = 0.0
    # Grants and refusals since the burst bucket was last full: what the platform took of them.
    since_full: int = 0
    refused_since_full: int = 0
    last_used: float = 0.0  # when a write last asked for it: the sweep's order
    grants: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0
    waiters: list[_Waiter] = field(default_factory=list)
    timer: asyncio.Task[None] | None = None
    # Lanes granted a write in the current window, oldest grant first: how many replies share it.
    holders: OrderedDict[int, float] = field(default_factory=OrderedDict)
    granted: int = 0
    throttled: int = 0

    def _forget(self, now: float) -> None:
        horizon = now - self.period
        while self.grants and self.grants[0] <= horizon:
            self.grants.popleft()
        while self.holders:
            holder, last = next(iter(self.holders.items()))
            if last > horizon:
                break
            del self.holders[holder]

    def next_free(
        self, now: float, urgency: int = Urgency.FIRST_TEXT, holder: int = 0, interval: float = 0.0
    ) -> float:
        """The earliest time a write of this urgency fits the window and no block is on.

        `interval` is the replies' own minimum gap between updates: with it the bucket knows
        whether its sharers want more than it holds.
        """
        self._forget(now)
        start = max(now, self.blocked_until)
        used = len(self.grants)
        # Slots this write must leave unused: cosmetic requests only take a window's first eighth.
        keep = self.limit - max(self.limit // 8, 1) if urgency == Urgency.BACKGROUND else 0
        if urgency == Urgency.PROGRESS and self.grants and self._oversubscribed(holder, interval):
            # Its sharers want more than it holds: progress leaves a reserve of the window to
            # first and final texts (spent by progress alone, the window kept new replies' first
            # texts waiting up to 14 s once a minute in a busy Slack workspace), and its grants
            # keep the average spacing of what is left instead of a burst whenever slots free.
            keep = self.limit // PROGRESS_RESERVE
            start = max(start, self.grants[-1] + self.period / (self.limit - keep))
        if self.burst:
            # The same eighth for cosmetic requests: only while the bucket is nearly full.
            room = max(self.burst // 8, 1) if urgency == Urgency.BACKGROUND else self.burst
            return max(start, self.full_at - (room - 1) * self.spacing)
        if used + keep < self.limit:
            return start
        return max(start, self.grants[used - (self.limit - keep)] + self.period)

    @property
    def spacing(self) -> float:
        """The sustained pace: one grant per this many seconds."""
        return self.period / self.limit

    def take(self, now: float) -> None:
        """Count a grant made at `now`."""
        self.grants.append(now)
        if self.burst:
            if self.full_at <= now:
                self.since_full = self.refused_since_full = 0
            self.since_full += 1
            self.full_at = max(self.full_at, now) + self.spacing

    def refused(self, now: float, retry_after: float) -> None:
        """A burst bucket's grant was refused with a 429: the platform's bucket was empty where
        this one had room. The refused write took nothing, so its spacing is given back. And the
        bucket holds less than assumed: no more than the platform took since the bucket was last
        full (what it took of a burst sent at once is its size), and in any case one less than
        before (a 429 the first write after a quiet spell met: others wrote there too). A burst
        of n that the platform cut after k leaves it holding k, after n - k refusals, each
        retried once. Until Retry-After it holds nothing, then it refills at its pace, kept
        PACE_MARGIN slower than declared from now on."""
        self.refused_since_full += 1
        taken = self.since_full - self.refused_since_full
        smaller = self.burst - 1 if taken < 1 else min(self.burst - 1, taken)
        self.burst = max(smaller, 1)
        self.period = max(self.period, self.declared[1] * (1 + PACE_MARGIN))
        # The platform's bucket is empty now and holds one again at Retry-After: what the old,
        # larger burst still owed is no debt of the smaller one (it held a post 17 s after a
        # Retry-After of 2 s when a burst of 18 shrank to 1).
        refilled_from = now + max(retry_after, 0.0)
        self.full_at = refilled_from + (self.burst - 1) * self.spacing

    def _oversubscribed(self, holder: int, interval: float) -> bool:
        sharers = len(self.holders) + (holder not in self.holders)
        return sharers > 1 and sharers * self.period > self.limit * interval

    def idle(self, now: float) -> bool:
        """Whether it holds nothing a new bucket would not: nobody waits or is being served, no
        429 or exhausted window blocks it, and no grant is left in its window."""
        if self.blocked_until > now or _live_head(self) is not None:
            return False
        if self.timer is not None and not self.timer.done():
            return False
        if self.full_at > now:  # a burst bucket still refilling
            return False
        self._forget(now)
        return not self.grants


@dataclass
class Lane:
    """One reply's place in the scheduler: when it last wrote, and whether it has shown text."""

    bucket: RateBucket
    last_write: float = float("-inf")
    shown_text: bool = False
    finishing: bool = False  # the reply has all its text: what it waits for is its final update
    # This reply's minimum gap between updates (an override's edit_interval); None: the default.
    interval: float | None = None


class EditScheduler:
    """Shared by every reply in the process. Time is injected so tests need not sleep."""

    def __init__(
        self, *, interval: float, clock: Clock | None = None, sleep: Sleep | None = None
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._sleep = sleep or asyncio.sleep
        # Least recently used first, so a sweep stops at the first bucket used lately.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        # Limits, periods and bursts the platform taught for buckets since dropped, see `_drop`.
        self._learned: OrderedDict[str, tuple[int, float, int]] = OrderedDict()
        self._next_sweep = float("-inf")
        self._seq = itertools.count()
        # Lanes waiting in a bucket now: where, and their place, so `promote` can move them up.
        self._waiting: dict[int, tuple[_Bucket, _Waiter]] = {}

    def now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    # --- buckets -----------------------------------------------------------------------------

    def _bucket(self, spec: RateBucket) -> _Bucket:
        now = self.now()
        bucket = self._buckets.get(spec.key)
        if bucket is None:
            declared = (spec.limit, spec.period, spec.burst)
            limit, period, burst = self._learned.pop(spec.key, declared)
            bucket = _Bucket(limit, period, declared=declared, burst=burst)
            self._buckets[spec.key] = bucket
        else:
            self._buckets.move_to_end(spec.key)
        bucket.last_used = now
        return bucket

    def _sweep(self) -> None:
        """Drop idle buckets among those unused for SWEEP_EVERY seconds, at most every
        SWEEP_EVERY seconds and SWEEP_BATCH buckets per call: the cost stays a small constant
        per write, and a bucket is looked at no more than once per SWEEP_EVERY."""
        now = self.now()
        if now < self._next_sweep:
            return
        unused_since = now - SWEEP_EVERY
        for _ in range(SWEEP_BATCH):
            if not self._buckets:
                break
            key, bucket = next(iter(self._buckets.items()))
            if bucket.last_used > unused_since:
                break  # every bucket after it was used later still
            if bucket.idle(now):
                self._drop(key, bucket)
            else:
                # Busy without being asked (writers waiting, a long block): look again later.
                bucket.last_used = now
                self._buckets.move_to_end(key)
        else:
            return  # more to look at: the next write goes on from here
        self._next_sweep = now + SWEEP_EVERY

    def _drop(self, key: str, bucket: _Bucket) -> None:
        del self._buckets[key]
        if (bucket.limit, bucket.period, bucket.burst) != bucket.declared:
            # What the platform taught is kept apart: a channel whose real limit is below the
            # platform's guess would otherwise take a burst of concurrent first writes (several
            # replies starting at once) over it before the first response corrects the guess,
            # and one above it would be slower than it may be. Three numbers a key, and at most
            # LEARNED_KEYS of them, where a whole bucket per channel is what grew without bound.
            self._learned[key] = (bucket.limit, bucket.period, bucket.burst)
            self._learned.move_to_end(key)
            if len(self._learned) > LEARNED_KEYS:
                self._learned.popitem(last=False)

    def penalize(self, spec: RateBucket, retry_after: float, *, learn: bool = True) -> None:
        """A write in this bucket got a 429: nobody writes to it until Retry-After has passed,
        and a burst bucket learns that it holds one write less (`_Bucket.refused`). With
        `learn` false (a back-off after a server error, not a 429) only the pause applies."""
        bucket = self._bucket(spec)
        now = self.now()
        bucket.blocked_until = max(bucket.blocked_until, now + max(retry_after, 0.0))
        if not learn:
            return
        bucket.throttled += 1
        if bucket.burst:
            bucket.refused(now, retry_after)

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
        """(grants, 429s) seen for a bucket key since the bucket was last dropped as idle."""
        bucket = self._buckets.get(key)
        return (0, 0) if bucket is None else (bucket.granted, bucket.throttled)

    # --- acquiring ---------------------------------------------------------------------------

    async def acquire(
        self,
        spec: RateBucket,
        urgency: Urgency,
        waited_since: float,
        *,
        holder: object | None = None,
    ) -> None:
        """Wait for one write in `spec`'s bucket and in every bucket it lies `within`.

        `waited_since` orders equally urgent writers; `holder` (a reply's Lane) tells the bucket
        how many replies share it.
        """
        key = 0 if holder is None else id(holder)
        self._sweep()
        bucket = self._bucket(spec)
        await self._acquire(bucket, int(urgency), waited_since, key)
        if spec.within is not None:
            granted_at = self.now()
            await self.acquire(spec.within, urgency, waited_since, holder=holder)
            now = self.now()
            if now > granted_at:
                # The write goes out now, not when its first bucket let it: count it from now.
                # Looked up again: if the wider bucket held the write for longer than this one's
                # window, this one may have been dropped as idle meanwhile.
                bucket = self._bucket(spec)
                if granted_at in bucket.grants:
                    bucket.grants.remove(granted_at)
                bucket.grants.append(now)
                if bucket.burst:
                    bucket.full_at = max(bucket.full_at, now + bucket.spacing)

    async def call_within(
        self,
        spec: RateBucket,
        urgency: Urgency,
        make_call: Callable[[], Awaitable[T]],
        *,
        taken: bool = False,
    ) -> T:
        """One platform call outside a reply's edit lane (a Slack stream's start or stop, which
        have tiers of their own): it waits for room in `spec` (unless its place was `taken`
        ahead with `try_acquire`), and a 429 blocks the bucket for its Retry-After before it
        reaches the caller."""
        if not taken:
            await self.acquire(spec, urgency, self.now())
        try:
            return await make_call()
        except RateLimited as limited:
            self.penalize(spec, limited.retry_after)
            raise

    def try_acquire(self, spec: RateBucket, urgency: Urgency) -> bool:
        """Take one write in `spec`'s bucket (and every bucket it lies `within`) if all have room
        now, else none: for cosmetic calls that are worthless late (a status line). It never
        goes ahead of a writer that waits in one of them with the same or a higher urgency."""
        self._sweep()
        now = self.now()
        order = (int(urgency), now, next(self._seq))
        buckets: list[_Bucket] = []
        current: RateBucket | None = spec
        while current is not None:
            bucket = self._bucket(current)
            if _waiter_ahead(bucket, order) or bucket.next_free(now, urgency) > now:
                return False
            buckets.append(bucket)
            current = current.within
        for bucket in buckets:
            self._grant(bucket, now, 0)
        return True

    async def _acquire(self, bucket: _Bucket, urgency: int, waited_since: float, key: int) -> None:
        now = self.now()
        order = (urgency, waited_since, next(self._seq))
        if (
            not _waiter_ahead(bucket, order)
            and bucket.next_free(now, urgency, key, self.interval) <= now
        ):
            self._grant(bucket, now, key)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (order, future, key)
        self._enqueue(bucket, waiter)
        if key:
            self._waiting[key] = (bucket, waiter)
        try:
            await future
        finally:
            # `promote` may have replaced the entry with a new place for the same future.
            found = self._waiting.get(key) if key else None
            if found is not None and found[1][1] is future:
                del self._waiting[key]

    def promote(self, lane: Lane) -> None:
        """The reply finished while `lane` waited to show progress: it now waits as FINAL."""
        lane.finishing = True
        found = self._waiting.get(id(lane))
        if found is None:
            return
        bucket, ((urgency, since, _), future, key) = found
        if urgency <= Urgency.FINAL or future.done():
            return
        # The old entry stays in the heap; whichever pops first finds the shared future done.
        waiter = ((int(Urgency.FINAL), since, next(self._seq)), future, key)
        self._waiting[key] = (bucket, waiter)
        self._enqueue(bucket, waiter)

    def _enqueue(self, bucket: _Bucket, waiter: _Waiter) -> None:
        heapq.heappush(bucket.waiters, waiter)
        if bucket.waiters[0] is waiter and bucket.timer is not None and not bucket.timer.done():
            # More urgent than the writer the timer sleeps for: it may go sooner.
            bucket.timer.cancel()
            bucket.timer = None
        self._arm(bucket)

    async def acquire_edit(self, lane: Lane, *, final: bool) -> None:
        """Wait until `lane` may write: its interval has passed and its bucket has room."""
        interval = self.interval if lane.interval is None else lane.interval
        gap = lane.last_write + interval - self.now()
        if gap > 0:
            await self._sleep(gap)
        if not lane.shown_text:
            urgency = Urgency.FIRST_TEXT
        else:
            urgency = Urgency.FINAL if final or lane.finishing else Urgency.PROGRESS
        await self.acquire(lane.bucket, urgency, lane.last_write, holder=lane)
        lane.last_write = self.now()

    def _grant(self, bucket: _Bucket, now: float, key: int) -> None:
        bucket.take(now)
        bucket.granted += 1
        if key:
            bucket.holders[key] = now
            bucket.holders.move_to_end(key)

    def _arm(self, bucket: _Bucket) -> None:
        if bucket.timer is None or bucket.timer.done():
            bucket.timer = asyncio.get_running_loop().create_task(self._serve(bucket))

    async def _serve(self, bucket: _Bucket) -> None:
        """Hand out grants to waiters in urgency order as the window allows, then exit."""
        while (head := _live_head(bucket)) is not None:
            (urgency, _, _), future, key = head
            now = self.now()
            free_at = bucket.next_free(now, urgency, key, self.interval)
            if free_at > now:
                await self._sleep(free_at - now)
                continue
            heapq.heappop(bucket.waiters)
            self._grant(bucket, now, key)
            future.set_result(None)
            # Let the granted writer run before the next grant is considered.
            await asyncio.sleep(0)


def _live_head(bucket: _Bucket) -> _Waiter | None:
    """The first writer still waiting in `bucket`; entries whose future is done (a writer
    cancelled while waiting, the old place of a promoted one) are dropped on the way."""
    while bucket.waiters and bucket.waiters[0][1].done():
        heapq.heappop(bucket.waiters)
    return bucket.waiters[0] if bucket.waiters else None


def _waiter_ahead(bucket: _Bucket, order: tuple[int, float, int]) -> bool:
    """Whether a writer waiting in `bucket` goes before a new write of this `order`."""
    head = _live_head(bucket)
    return head is not None and head[0] < order
