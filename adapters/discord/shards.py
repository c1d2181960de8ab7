"""Which shards of the bot's gateway this process connects, and what follows from them.

Discord places a guild on shard `(guild_id >> 22) % shard_count` and DMs on shard 0; a process
that connects some of the shards sees only their guilds, and gets their share of the bot's global
request limit, so that the processes of one bot together stay within it.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.config import DiscordSettings
from bridge.ports import RateBucket

DISCORD_GLOBAL_LIMIT = 50  # requests per second per bot, over every route and process


@dataclass(frozen=True, slots=True)
class ShardPlan:
    count: int = 1
    ids: tuple[int, ...] = (0,)
    # shard_ids were configured: the process identifies with a shard even if there is one.
    explicit: bool = False

    @classmethod
    def of(cls, settings: DiscordSettings) -> ShardPlan:
        return cls(settings.shard_count, tuple(settings.shards()), bool(settings.shard_ids))

    @property
    def sharded(self) -> bool:
        """Whether the gateway is joined shard by shard (else one plain session, as before)."""
        return self.count > 1 or self.explicit

    @property
    def every_shard(self) -> bool:
        return len(self.ids) == self.count

    @property
    def registers_commands(self) -> bool:
        """Slash commands are registered once per bot, by the process that has shard 0 (the
        one that also gets the DMs), not once per process."""
        return 0 in self.ids

    def shard_of(self, guild_id: int | None) -> int:
        return 0 if guild_id is None else (guild_id >> 22) % self.count

    def connects(self, guild_id: int | None) -> bool:
        return self.shard_of(guild_id) in self.ids

    def share_of(self, limit: int) -> int:
        """This process's part of a bot-wide budget of `limit`: its shards' fraction, at least
        one."""
        return max(1, limit * len(self.ids) // self.count)

    def describe(self) -> str:
        if self.every_shard:
            return f"all {self.count} shards" if self.count > 1 else "shard 0 of 1"
        listed = ", ".join(str(i) for i in self.ids)
        return f"shard{'s' if len(self.ids) > 1 else ''} {listed} of {self.count}"

    def connected_line(self, guilds: int, budget: RateBucket) -> str:
        """What the process says once connected: its shards and its share of the global limit."""
        return (
            f"discord: connected {self.describe()} ({guilds} guilds); this process's share of "
            f"the global limit: {self.share_of(DISCORD_GLOBAL_LIMIT)} requests/s, replies draw "
            f"from {budget.limit} per {budget.period:g}s of it"
        )
