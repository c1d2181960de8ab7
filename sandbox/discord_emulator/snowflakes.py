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
        self._backdated: set[int] = set()

    def next(self) -> int:
        millis = int(self._wall_clock() * 1000) - DISCORD_EPOCH_MS
        candidate = millis << 22
        # Many ids per millisecond are normal here (a burst of edits), so the low bits count up.
        if candidate <= self._last:
            candidate = self._last + 1
        self._last = candidate
        return candidate

    def on_shard(self, shard_id: int, shard_count: int) -> int:
        """The next id whose millisecond puts it on a shard: `(id >> 22) % shard_count ==
        shard_id`, as Discord places a guild. At most `shard_count - 1` ms ahead of the clock."""
        candidate = self.next()
        millis = candidate >> 22
        ahead = (shard_id - millis) % shard_count
        if ahead:
            candidate = (millis + ahead) << 22
            self._last = candidate
        return candidate

    def backdated(self, seconds: float) -> int:
        """An id made `seconds` ago: a message in the history from before the bot connected.
        Unique, but out of order with the ids already handed out, as such a message is."""
        millis = int((self._wall_clock() - seconds) * 1000) - DISCORD_EPOCH_MS
        # The upper half of the low bits: ids made in that millisecond count up from zero.
        candidate = (millis << 22) | (1 << 21)
        while candidate in self._backdated:
            candidate += 1
        self._backdated.add(candidate)
        return candidate


def snowflake_iso(snowflake: int) -> str:
    """The ISO-8601 creation time Discord shows for an id (e.g. a message's `timestamp`)."""
    millis = (snowflake >> 22) + DISCORD_EPOCH_MS
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat()


def now_iso(wall_clock: Callable[[], float] = time.time) -> str:
    return datetime.fromtimestamp(wall_clock(), UTC).isoformat()
