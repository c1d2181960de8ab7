"""[limits] at run time: per-user rates, concurrent replies, the queue and the LLM's slots.

One `Limiter` per process; it outlives reloads (counts in flight stay true) and reads the
current `LimitSettings` on every check. Time is injected, like the scheduler's.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from bridge.policy.settings import LimitSettings

Clock = Callable[[], float]
WINDOW = 60.0  # user_messages_per_minute counts the last minute
# Added to a reply's order for the requests that follow it (titles): they go after every reply.
SIDE_REQUESTS = 1 << 40


@dataclass(frozen=True, slots=True)
class OverLimit:
    """Which limit a message is over, in words for the `notices.limited` notice."""

    name: str  # the [limits] key
    limit: str  # "you sent 5 messages in the last minute, the most allowed"
    resets: str  # "Try again in 40 s."


class LLMSlots:
    """At most `capacity` open LLM requests (0: no cap); the rest wait in order of arrival.

    A reply lines up when its turn in its conversation comes (not while it waits behind the
    previous reply of the same chat, which would hold up other chats for nothing). Slots go to
    the earliest admitted reply in line, even when a later one asks first: a reply whose
    placeholder took longer to post keeps its place, for at most `hold` seconds (a post slowed by
    a rate limit or a database outage must not hold up every other reply).
    """

    def __init__(self, capacity: int = 0, *, clock: Clock | None = None, hold: float = 2.0) -> None:
        self._capacity = capacity
        self._clock = clock
        self._hold = hold
        self.open = 0
        self._line: list[int] = []  # admission orders, earliest first
        self._lined_at: dict[int, float] = {}  # order -> when it lined up (not asked yet)
        self._asking: dict[int, asyncio.Future[None]] = {}
        self._timer: asyncio.TimerHandle | None = None

    @property
    def capacity(self) -> int:
        return self._capacity

    @capacity.setter
    def capacity(self, value: int) -> None:
        self._capacity = value
        self._hand_over()

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    def _free(self) -> bool:
        return self._capacity == 0 or self.open < self._capacity

    def line_up(self, order: int) -> None:
        if self._capacity == 0 or order in self._lined_at:
            return  # no cap: no line (a cap set later lines replies up as they ask)
        heapq.heappush(self._line, order)
        self._lined_at[order] = self._now()

    def leave(self, order: int) -> None:
        """A reply that lined up ends without a slot (it failed before its request)."""
        if self._lined_at.pop(order, None) is not None:
            self._hand_over()

    def try_acquire(self, order: int) -> bool:
        """Take a slot now if one is free and it is this reply's turn; never waits."""
        if self._capacity == 0:
            self.open += 1
            return True
        self.line_up(order)
        self._drop_gone()
        if self._free() and self._line and self._line[0] == order:
            heapq.heappop(self._line)
            self._lined_at.pop(order, None)
            self.open += 1
            return True
        return False

    async def acquire(self, order: int) -> None:
        if self.try_acquire(order):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._asking[order] = future
        self._hand_over()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed a slot just as it was cancelled: pass it on
            else:
                self.leave(order)
            raise
        finally:
            self._asking.pop(order, None)

    def release(self) -> None:
        self.open -= 1
        self._hand_over()

    def _drop_gone(self) -> None:
        while self._line and self._line[0] not in self._lined_at:
            heapq.heappop(self._line)

    def _hand_over(self) -> None:
        if self._capacity == 0:
            # No cap (any more): everyone waiting goes, and nobody lines up.
            for future in list(self._asking.values()):
                if not future.done():
                    self.open += 1
                    future.set_result(None)
            self._line.clear()
            self._lined_at.clear()
            return
        while self._free():
            self._drop_gone()
            if not self._line:
                return
            first = self._line[0]
            asked = self._asking.get(first)
            if asked is None or asked.done():
                # The earliest in line has not asked yet: its slot waits for it a while.
                asked, first = self._earliest_asking_past_hold(first)
                if asked is None:
                    return
                self._line.remove(first)
                heapq.heapify(self._line)
            else:
                heapq.heappop(self._line)
            self._lined_at.pop(first, None)
            self.open += 1
            asked.set_result(None)

    def _earliest_asking_past_hold(self, first: int) -> tuple[asyncio.Future[None] | None, int]:
        waited = self._now() - self._lined_at.get(first, self._now())
        asking = sorted(o for o, f in self._asking.items() if not f.done() and o in self._lined_at)
        if not asking:
            return None, first
        if waited >= self._hold:
            return self._asking[asking[0]], asking[0]
        if self._timer is None:
            loop = asyncio.get_running_loop()

            def again() -> None:
                self._timer = None
                self._hand_over()

            self._timer = loop.call_later(self._hold - waited + 0.001, again)
        return None, first


class Ticket:
    """One admitted message: counted in its user's and its channel's replies, and in the queue
    until it gets an LLM slot, until `release`."""

    def __init__(
        self,
        limiter: Limiter,
        user: str,
        channel: str,
        order: int,
        queued_after: float,
        queued_notice: str,
        queued_status: str = "",
    ) -> None:
        self._limiter = limiter
        self.user = user
        self.channel = channel
        self.order = order
        # Seconds of waiting for a slot before the placeholder says "queued".
        self.queued_after = queued_after
        self.queued_notice = queued_notice
        self.queued_status = queued_status
        self._queued = True
        self._holding = False
        self._released = False

    def line_up(self) -> None:
        """Its turn in its conversation came: it lines up for an LLM slot."""
        if not self._released:
            self._limiter.slots.line_up(self.order)

    def try_take_slot(self) -> bool:
        """Take a slot if one is free for it now (then no "queued" state is shown at all)."""
        if self._holding:
            return True
        if self._released or not self._limiter.slots.try_acquire(self.order):
            return False
        self._holding = True
        self._leave_queue()
        return True

    @contextlib.asynccontextmanager
    async def side_slot(self) -> AsyncIterator[None]:
        """A slot for a request that follows the reply (its title), behind every reply waiting:
        it counts against limits.llm_concurrent_requests like any other request."""
        slots = self._limiter.slots
        await slots.acquire(self.order + SIDE_REQUESTS)
        try:
            yield
        finally:
            slots.release()

    async def take_slot(self) -> None:
        """Wait for one of the LLM's slots (held until `give_slot` or `release`)."""
        if self._holding:
            return
        await self._limiter.slots.acquire(self.order)
        self._holding = True
        self._leave_queue()
        if self._released:  # released while it waited (the reply ended): hand the slot on
            self.give_slot()

    def give_slot(self) -> None:
        if self._holding:
            self._holding = False
            self._limiter.slots.release()

    def _leave_queue(self) -> None:
        if self._queued:
            self._queued = False
            self._limiter.queued -= 1

    def release(self) -> None:
        """The reply ended: its counts, its place in the queue and any slot are given back."""
        if self._released:
            return
        self._released = True
        self._limiter.slots.leave(self.order)  # a no-op unless it is still in line
        self.give_slot()
        self._leave_queue()
        self._limiter.ended(self)


class Limiter:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._recent: dict[str, deque[float]] = {}
        self._user_replies: Counter[str] = Counter()
        self._channel_replies: Counter[str] = Counter()
        self.queued = 0
        self.slots = LLMSlots(clock=clock)
        self._order = itertools.count()
        self._last_prune = 0.0

    def check(self, limits: LimitSettings, user: str, channel: str, text: str) -> OverLimit | None:
        """The first limit the message is over (the token quotas are checked apart: they need
        the database)."""
        if limits.max_input_chars and len(text) > limits.max_input_chars:
            return OverLimit(
                "max_input_chars",
                f"your message has {len(text):,} characters, more than the "
                f"{limits.max_input_chars:,} allowed",
                "Shorten it and send it again.",
            )
        per_minute = limits.user_messages_per_minute
        if per_minute:
            recent = self._window(user)
            if len(recent) >= per_minute:
                wait = max(1, round(recent[0] + WINDOW - self._clock()))
                return OverLimit(
                    "user_messages_per_minute",
                    f"you sent {per_minute} messages in the last minute, the most allowed",
                    f"Try again in {wait} s.",
                )
        if limits.user_concurrent_replies and (
            self._user_replies[user] >= limits.user_concurrent_replies
        ):
            return OverLimit(
                "user_concurrent_replies",
                f"you already have {self._user_replies[user]} answers on the way, the most allowed",
                "Ask again when one of them is done.",
            )
        if limits.channel_concurrent_replies and (
            self._channel_replies[channel] >= limits.channel_concurrent_replies
        ):
            return OverLimit(
                "channel_concurrent_replies",
                f"this channel already has {self._channel_replies[channel]} answers on the way, "
                "the most allowed",
                "Ask again when one of them is done.",
            )
        return None

    def over_queue(self, limits: LimitSettings) -> bool:
        return bool(limits.queue_limit) and self.queued >= limits.queue_limit

    def admit(
        self,
        user: str,
        channel: str,
        queued_after: float = 3.0,
        queued_notice: str = "",
        queued_status: str = "",
    ) -> Ticket:
        now = self._clock()
        self._window(user).append(now)
        self._user_replies[user] += 1
        self._channel_replies[channel] += 1
        self.queued += 1
        if now - self._last_prune > WINDOW:
            self._prune(now)
        order = next(self._order)
        return Ticket(self, user, channel, order, queued_after, queued_notice, queued_status)

    def ended(self, ticket: Ticket) -> None:
        for counter, key in (
            (self._user_replies, ticket.user),
            (self._channel_replies, ticket.channel),
        ):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]

    def _window(self, user: str) -> deque[float]:
        recent = self._recent.get(user)
        if recent is None:
            recent = self._recent[user] = deque()
        horizon = self._clock() - WINDOW
        while recent and recent[0] <= horizon:
            recent.popleft()
        return recent

    def _prune(self, now: float) -> None:
        """Forget users with no message in the last minute (a big community leaves no trail)."""
        self._last_prune = now
        horizon = now - WINDOW
        for user in [u for u, times in self._recent.items() if not times or times[-1] <= horizon]:
            del self._recent[user]


class NoticeGate:
    """At most one limit or refusal notice per user per minute: notices cannot flood a channel."""

    def __init__(self, clock: Clock, period: float = WINDOW) -> None:
        self._clock = clock
        self._period = period
        self._last: dict[str, float] = {}

    def may_tell(self, user: str) -> bool:
        now = self._clock()
        last = self._last.get(user)
        if last is not None and now - last < self._period:
            return False
        if len(self._last) > 10_000:
            horizon = now - self._period
            self._last = {u: t for u, t in self._last.items() if t > horizon}
        self._last[user] = now
        return True
