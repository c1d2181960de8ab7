"""Periodic upkeep on APScheduler: this process's heartbeat, crash recovery (see
`bridge.recovery`), and retention of processed event ids and old messages. Jobs call core and
store functions only, never a platform SDK.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bridge.config import RecoverySettings
from bridge.ownership import Liveness
from bridge.ports import ChatStore, FileVault, StoreUnavailable
from bridge.recovery import Recovery

log = logging.getLogger(__name__)

RETENTION_INTERVAL = 3600.0
SWEEP_RETRY_SECONDS = 2.0


class Housekeeping:
    """Registers this process as an owner on start, and releases it on stop (after the drain),
    so whatever it leaves unfinished is recovered at once by the next process."""

    def __init__(
        self,
        store: ChatStore,
        *,
        liveness: Liveness,
        recovery: Recovery | None,
        settings: RecoverySettings,
        event_retention: float,
        message_retention: float | None = None,
        runs_maintenance: Callable[[], bool] | None = None,
        files: FileVault | None = None,
    ) -> None:
        """`runs_maintenance`: whether this process prunes now (`[cluster]`: the holder of the
        maintenance lease does, one instance at a time; None: always)."""
        self._store = store
        self._liveness = liveness
        self._recovery = recovery
        self._settings = settings
        self._event_retention = event_retention
        self._message_retention = message_retention
        self._runs_maintenance = runs_maintenance
        self._files = files
        self._scheduler: AsyncIOScheduler | None = None
        self.name = "housekeeping"

    async def start(self) -> None:
        # Before any platform starts: every message this process stores has a registered owner.
        self._liveness.started()
        await self._store.register_owner(self._liveness.host, self._liveness.pid)
        scheduler = AsyncIOScheduler()
        scheduler.add_job(
            self.heartbeat, "interval", seconds=self._settings.heartbeat_interval, max_instances=1
        )
        if self._recovery is not None:
            scheduler.add_job(
                self.sweep, "interval", seconds=self._settings.sweep_interval, max_instances=1
            )
        scheduler.add_job(self.prune, "interval", seconds=RETENTION_INTERVAL, max_instances=1)
        scheduler.start()
        self._scheduler = scheduler

    async def running(self) -> None:
        """Every service is up (the platforms are connected): recover what a crash left now."""
        if self._scheduler is not None and self._recovery is not None:
            self._scheduler.add_job(self.sweep, next_run_time=datetime.now(UTC))

    async def stop_intake(self) -> None:
        """Before anything stops: no new sweep, and the running one finishes what it began
        while the platforms can still show it (APScheduler would cancel it midway). The
        heartbeat goes on until `stop`: a drain must not look like a death to other instances."""
        if self._recovery is not None:
            await self._recovery.stop()

    async def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        try:
            await self._store.release_owner()
        except Exception as exc:  # the owner then times out instead
            log.warning("could not mark this process as stopped: %s", exc)
        self._liveness.stopped()

    async def heartbeat(self) -> None:
        try:
            await self._store.heartbeat()
        except Exception as exc:
            log.warning("heartbeat not saved: %s", exc)

    async def sweep(self) -> None:
        assert self._recovery is not None
        try:
            await self._recovery.sweep()
        except (StoreUnavailable, OSError) as exc:
            # The database is away: try again soon rather than at the next interval, so a
            # takeover during an outage finishes the dead process's replies once it is back.
            log.warning("recovery sweep waits for the database (%s); again in %gs", exc,
                        SWEEP_RETRY_SECONDS)  # fmt: skip
            if self._scheduler is not None:
                when = datetime.now(UTC) + timedelta(seconds=SWEEP_RETRY_SECONDS)
                self._scheduler.add_job(self.sweep, next_run_time=when)
        except Exception:
            log.exception(
                "recovery sweep failed; trying again in %gs", self._settings.sweep_interval
            )

    async def prune(self) -> None:
        if self._runs_maintenance is not None and not self._runs_maintenance():
            return
        try:
            events = await self._store.prune_events(self._event_retention)
            messages = files = 0
            if self._message_retention:
                messages = await self._store.prune_messages(self._message_retention)
                # Files follow their messages: kept as long, by the same clock.
                if self._files is not None:
                    files = await self._files.prune(self._message_retention)
        except Exception as exc:
            log.warning("retention: pruning failed: %s", exc)
            return
        if events or messages or files:
            log.info("retention: pruned %d event ids, %d messages and %d files",
                     events, messages, files)  # fmt: skip
