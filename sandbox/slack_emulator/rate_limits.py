"""Per-method rate limits (sliding one-minute window per workspace) and injected 429 answers.

Nothing is limited until a test or benchmark asks for it; `SLACK_TIERS` holds the usual values.
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


@dataclass(slots=True)
class _Limit:
    per_minute: int
    per_channel: bool


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
        self._injected: dict[str, _Injected] = {}

    def limit(self, method: str, per_minute: int | None, *, per_channel: bool = False) -> None:
        """Enforce `per_minute` calls of `method`; None removes the limit."""
        if per_minute is None:
            self._limits.pop(method, None)
        else:
            self._limits[method] = _Limit(per_minute, per_channel)
        self._windows = {key: calls for key, calls in self._windows.items() if key[0] != method}

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
