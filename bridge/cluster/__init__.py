"""Several instances on one PostgreSQL database (`[cluster]`): leases decide which instance
answers each Slack workspace and Discord shard, and the others hand it their events.

`Cluster` is the lifecycle service that runs the lease ticks, the handoff consumer and the
database wake-ups; the intake asks its `router` where a message is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from bridge.cluster.handoffs import HandoffConsumer, HandoffPlace, NotReady
from bridge.cluster.leases import MAINTENANCE, LeaseKeeper, LeaseTiming
from bridge.cluster.router import Router, lease_name, shard_lease
from bridge.ports import ClusterStore, StoreUnavailable, Subscription

log = logging.getLogger(__name__)

OVERRIDES_REFRESH_SECONDS = 60.0

__all__ = [
    "Cluster",
    "HandoffPlace",
    "LeaseTiming",
    "NotReady",
    "Router",
    "lease_name",
    "shard_lease",
]


class Cluster:
    def __init__(
        self,
        store: ClusterStore,
        *,
        instance: str,
        timing: LeaseTiming,
        places: Sequence[HandoffPlace],
        heartbeat: Callable[[], Awaitable[None]],
        discord_shards: int = 1,
        known_dead: Callable[[str], Awaitable[bool]] | None = None,
        outage_tolerance: float = 30.0,
    ) -> None:
        """`known_dead`: whether a process run is known to be dead (see LeaseKeeper);
        `outage_tolerance`: how long a handoff waits out a database outage."""
        self.name = "cluster"
        self._store = store
        self._places = {place.platform: place for place in places}
        self._timing = timing
        self._heartbeat = heartbeat
        self.keeper = LeaseKeeper(
            store, instance=instance, timing=timing, serves=self._serves, known_dead=known_dead
        )
        self.router = Router(
            self.keeper, store, discord_shards=discord_shards, outage_tolerance=outage_tolerance
        )
        self.consumer = HandoffConsumer(
            store, self._places, held=lambda: self.keeper.held, poll=timing.lease_seconds
        )
        self._refreshing = asyncio.Lock()
        self.keeper.on_gained(self._gained)
        self._on_gain: list[Callable[[str], Awaitable[None]]] = []
        self._on_overrides: list[Callable[[], Awaitable[None]]] = []
        self._on_stop: list[Callable[[str], Awaitable[None]]] = []
        self._subscription: Subscription | None = None
        self._ticks: asyncio.Task[None] | None = None
        self._tick_now = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()

    def after_gain(self, callback: Callable[[str], Awaitable[None]]) -> None:
        """Run after this instance takes a lease (crash recovery of the previous holder's)."""
        self._on_gain.append(callback)

    def on_overrides(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run when another instance changed the runtime overrides (an admin command)."""
        self._on_overrides.append(callback)

    def on_stop(self, callback: Callable[[str], Awaitable[None]]) -> None:
        """Run with a Stop another instance received for a reply it does not write."""
        self._on_stop.append(callback)

    async def relay_stop(self, detail: str) -> None:
        """Tell every instance about a Stop for a reply this one does not write."""
        await self._store.wake("stop", detail)

    def runs_maintenance(self) -> bool:
        return self.keeper.holds(MAINTENANCE)

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._subscription = await self._store.subscribe(self._woken)
        if self._subscription is None:
            log.warning("cluster: the database cannot wake instances; polling every %gs",
                        self._timing.lease_seconds)  # fmt: skip
        self._ticks = asyncio.get_running_loop().create_task(self._run_ticks())
        self.consumer.start()

    async def running(self) -> None:
        """The platforms are connected: take their leases now rather than at the next tick."""
        self._tick_now.set()

    async def stop_intake(self) -> None:
        """The bridge drains: no new lease, no new queued event; the leases held are renewed
        until `stop`, after the drain."""
        self.keeper.stop_acquiring()
        await self.consumer.stop_taking()

    async def stop(self) -> None:
        await self.consumer.stop(10.0)
        if self._ticks is not None:
            self._ticks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticks
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.keeper.release_all()
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._subscription.close()

    # --- inside --------------------------------------------------------------------------------

    def _serves(self) -> list[str]:
        return [lease for place in self._places.values() for lease in place.leases_served()]

    async def _run_ticks(self) -> None:
        ticks = 0
        # Runtime overrides are read again now and then even without a wake-up: one sent while
        # the listening connection was down is lost.
        refresh_every = max(1, round(OVERRIDES_REFRESH_SECONDS / self._timing.tick))
        while True:
            try:
                await self._heartbeat()
            except Exception as exc:
                log.warning("cluster: heartbeat not saved: %s", exc)
            try:
                await self.keeper.tick()
            except Exception:
                log.exception("cluster: a lease tick failed")
            ticks += 1
            if ticks % refresh_every == 0:
                self._refresh_overrides()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tick_now.wait(), self._timing.tick)
            self._tick_now.clear()

    def _woken(self, topic: str, detail: str) -> None:
        if topic == "handoff" and self.keeper.holds(detail):
            self.consumer.wake()
        elif topic == "lease":
            self._tick_now.set()  # one was released or taken: look now
        elif topic == "reconnected":
            self._tick_now.set()
            self.consumer.wake()
            self._refresh_overrides()
        elif topic == "overrides":
            self._refresh_overrides()
        elif topic == "stop":
            for callback in self._on_stop:
                self._spawn(callback(detail))

    def _refresh_overrides(self) -> None:
        async def refresh() -> None:
            async with self._refreshing:  # one at a time: an older read never lands last
                for callback in self._on_overrides:
                    await callback()

        self._spawn(refresh())

    async def _gained(self, lease: str) -> None:
        try:
            reopened = await self._store.reopen_handoffs([lease])
        except Exception as exc:  # the next tick reopens them
            log.warning("cluster: queued events of %s not reopened yet: %s", lease, exc)
        else:
            if reopened:
                log.info("cluster: %d events queued for %s are taken again", reopened, lease)
        self.consumer.wake()
        for callback in self._on_gain:
            self._spawn(callback(lease))

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            except StoreUnavailable as exc:
                # The database is away (a wake-up on reconnecting comes while it still is): the
                # follow-ups are done again, at the next tick, refresh or takeover.
                log.warning("cluster: a follow-up waits for the database: %s", exc)
            except Exception:
                log.exception("cluster: a follow-up failed")

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
