"""Where a message is answered when several instances run: by the holder of its lease.

A Slack workspace is one lease (its rate tiers are per workspace); a Discord shard is one (the
gateway delivers a guild's events to its shard, DMs to shard 0). An instance that receives a
message for a lease it does not hold queues it for the holder in the database, after [access]
has let it through (nothing of a refused message is stored).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from bridge.cluster.leases import LeaseKeeper, _Work
from bridge.outage import through_outage
from bridge.ports import ClusterStore

log = logging.getLogger(__name__)


def lease_name(platform: str, workspace: str, *, discord_shards: int = 1) -> str:
    if platform == "discord":
        shard = (int(workspace) >> 22) % discord_shards if workspace.isdigit() else 0
        return shard_lease(shard)
    return f"{platform}:{workspace}"


def shard_lease(shard: int) -> str:
    return f"discord:shard:{shard}"


class Router:
    def __init__(
        self,
        keeper: LeaseKeeper,
        store: ClusterStore,
        *,
        discord_shards: int = 1,
        outage_tolerance: float = 30.0,
    ) -> None:
        """`outage_tolerance`: how long a handoff waits out a database outage
        (`storage.outage_tolerance`, as every write a user waits for)."""
        self._keeper = keeper
        self._store = store
        self._discord_shards = discord_shards
        self._outage_tolerance = outage_tolerance

    def lease_of(self, platform: str, workspace: str) -> str:
        return lease_name(platform, workspace, discord_shards=self._discord_shards)

    async def answers_here(self, platform: str, workspace: str) -> bool:
        """This instance answers the message (it holds the lease, or just took a free one)."""
        lease = self.lease_of(platform, workspace)
        return self._keeper.holds(lease) or await self._keeper.try_acquire(lease)

    def may_settle(self, platform: str, workspace: str) -> bool:
        """Crash recovery of a chat here: its lease is ours, or this instance serves it and no
        live instance holds it."""
        lease = self.lease_of(platform, workspace)
        if self._keeper.holds(lease):
            return True
        return self._keeper.serves(lease) and not self._keeper.held_by_another(lease)

    def working(self, platform: str, workspace: str) -> _Work:
        return self._keeper.working(self.lease_of(platform, workspace))

    async def hand_over(
        self,
        platform: str,
        workspace: str,
        event_id: str,
        chat: str,
        payload: Callable[[], Mapping[str, Any]],
        where: Mapping[str, object],
    ) -> None:
        """Queue the event for its lease's holder; raises StoreUnavailable when the database
        stayed away longer than the outage tolerance (the caller tells the user)."""
        lease = self.lease_of(platform, workspace)
        body = dict(payload())
        queued = await through_outage(
            lambda: self._store.hand_over(lease, platform, event_id, chat, body),
            tolerance=self._outage_tolerance,
            clock=time.monotonic,
            sleep=asyncio.sleep,
            what=f"handing {event_id} over",
            where=where,
        )
        log.info("cluster: %s handed to the holder of %s%s", event_id, lease,
                 "" if queued else " (already queued)", extra=where)  # fmt: skip
