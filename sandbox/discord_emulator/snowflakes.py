"""Discord snowflake ids: milliseconds since the Discord epoch in the top 42 bits, a counter below.

Ids made here sort by creation time like real ones, so discord.py's `snowflake_time` and its
message-age sub-limits (e.g. on DELETE) behave as they do against Discord.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

DISCORD_EPOCH_MS = 1_420_070_400_000


class SnowflakeGenerator:
    """Hands out strictly increasing snowflakes derived from a wall clock."""

    def __init__(self, wall_clock: Callable[[], float] = time.time) -> None:
        self._wall_clock = wall_clock
        self._last = 0

    def next(self) -> int:
        millis = int(self._wall_clock() * 1000) - DISCORD_EPOCH_MS
        candidate = millis << 22
        # Many ids per millisecond are normal here (a burst of edits), so the low bits count up.
        if candidate <= self._last:
            candidate = self._last + 1
        self._last = candidate
        return candidate


def snowflake_iso(snowflake: int) -> str:
    """The ISO-8601 creation time Discord shows for an id (e.g. a message's `timestamp`)."""
    millis = (snowflake >> 22) + DISCORD_EPOCH_MS
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat()


def now_iso(wall_clock: Callable[[], float] = time.time) -> str:
    return datetime.fromtimestamp(wall_clock(), UTC).isoformat()
