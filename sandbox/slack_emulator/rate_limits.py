"""Per-method rate limits and injected 429 answers.

A limit is a sliding one-minute window (per workspace, or per channel), or, with a `burst`, a
bucket that holds `burst` calls and refills at the per-minute pace: Slack's posts in a channel,
"1 per second, short bursts >1 allowed". Nothing is limited until a test or benchmark asks for
it; `SLACK_TIERS` and `SLACK_BURSTS` hold the usual values.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_SECONDS = 60.0

# Approximate calls per minute (Tier 2 = 20, Tier 3 = 50, Tier 4 = 100); postMessage is per channel.
SLACK_TIERS: dict[str, tuple[int, bool]] = {
    "chat.postMessage": (60, True),
    "chat.update": (50, False),
    "chat.postEphemeral": (100, False),  # Tier 4
    "chat.delete": (50, False),
    "chat.startStream": (50, False),
    "chat.appendStream": (100, False),
    "chat.stopStream": (20, False),
    "assistant.threads.setStatus": (100, False),
    "conversations.replies": (50, False),
    "users.info": (100, False),
    "apps.connections.open": (1, False),
}

# Slack publishes no figure for chat.postMessage's burst in a channel. 25: what one public
# measurement found (RamblingCookieMonster/PSSlack#52: about 25 at once, then one a second).
# Strictly one a second, no burst, is `burst=1`.
SLACK_POST_BURST = 25
SLACK_BURSTS: dict[str, int] = {"chat.postMessage": SLACK_POST_BURST}


@dataclass(slots=True)
class _Limit:
    per_minute: int
    per_channel: bool
    burst: int = 0  # 0: a one-minute window; else a bucket of `burst`, refilled per_minute/60 a s

    @property
    def spacing(self) -> float:
        return WINDOW_SECONDS / self.per_minute


@dataclass(slots=True)
class _Injected:
    remaining: int
    retry_after: int


class RateLimiter:
    """Decides whether a call is answered with 429; accepted calls fill the window."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._limits: dict[str, _Limit] = {}
        self._windows: dict[tuple[str, str], deque[float]] = {}
        # Burst limits: when each bucket is full again (one spacing added per accepted call).
        self._full_at: dict[tuple[str, str], float] = {}
        self._injected: dict[str, _Injected] = {}

    def limit(
        self, method: str, per_minute: int | None, *, per_channel: bool = False, burst: int = 0
    ) -> None:
        """Enforce `per_minute` calls of `method` (with `burst`: after a burst of that many);
        None removes the limit."""
        if burst < 0:
            raise ValueError("burst must be 0 (a one-minute window) or more")
        if per_minute is None:
            self._limits.pop(method, None)
        else:
            self._limits[method] = _Limit(per_minute, per_channel, burst)
        self._windows = {key: calls for key, calls in self._windows.items() if key[0] != method}
        self._full_at = {key: at for key, at in self._full_at.items() if key[0] != method}

    def inject(self, method: str, count: int, retry_after: int = 1) -> None:
        """The next `count` calls of `method` get a 429 regardless of the window."""
        self._injected[method] = _Injected(count, retry_after)

    def check(self, method: str, channel: str) -> int | None:
        """Retry-After seconds if this call is limited; otherwise None, and the call is counted."""
        injected = self._injected.get(method)
        if injected is not None and injected.remaining > 0:
            injected.remaining -= 1
            return injected.retry_after
        limit = self._limits.get(method)
        if limit is None:
            return None
        key = (method, channel if limit.per_channel else "")
        if limit.burst:
            return self._take_from_bucket(key, limit)
        calls = self._windows.get(key)
        if calls is None:
            calls = self._windows[key] = deque()
        now = self._clock()
        while calls and calls[0] <= now - WINDOW_SECONDS:
            calls.popleft()
        if len(calls) >= limit.per_minute:
            return max(1, math.ceil(calls[0] + WINDOW_SECONDS - now))
        calls.append(now)
        return None

    def _take_from_bucket(self, key: tuple[str, str], limit: _Limit) -> int | None:
        now = self._clock()
        full_at = self._full_at.get(key, now)
        # A call fits while the bucket holds one: at most burst - 1 spacings owed.
        fits_at = full_at - (limit.burst - 1) * limit.spacing
        if now < fits_at:
            return max(1, math.ceil(fits_at - now))
        self._full_at[key] = max(full_at, now) + limit.spacing
        return None
