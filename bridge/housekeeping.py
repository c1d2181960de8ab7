"""Periodic upkeep on APScheduler: recover replies a crashed process left streaming, prune old
event claims. Jobs call core and store functions only, never a platform SDK.
"""

from __future__ import annotations

import logging

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bridge.ports import ChatStore

log = logging.getLogger(__name__)


class Housekeeping:
    def __init__(
        self,
        store: ChatStore,
        *,
        stale_after: float,
        event_retention: float,
        interval: float = 60.0,
    ) -> None:
        self._store = store
        self._stale_after = stale_after
        self._event_retention = event_retention
        self._interval = interval
        self._scheduler: AsyncIOScheduler | None = None
        self.name = "housekeeping"

    async def start(self) -> None:
        await self.recover_stale_replies()  # a previous run may have crashed mid-reply
        scheduler = AsyncIOScheduler()
        scheduler.add_job(self.recover_stale_replies, "interval", seconds=self._interval)
        scheduler.add_job(self.prune_events, "interval", seconds=max(self._interval, 3600.0))
        scheduler.start()
        self._scheduler = scheduler

    async def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    async def recover_stale_replies(self) -> int:
        stale = await self._store.interrupt_stale_replies(self._stale_after)
        for message in stale:
            log.warning(
                "reply %s in chat %s was left unfinished (%d chars); marked interrupted",
                message.id,
                message.chat_id,
                len(message.content),
            )
        return len(stale)

    async def prune_events(self) -> int:
        pruned = await self._store.prune_events(self._event_retention)
        if pruned:
            log.info("pruned %d processed event ids", pruned)
        return pruned
