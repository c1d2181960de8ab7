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

from bridge.cluster.handoffs import HandoffConsumer, HandoffPlace
from bridge.cluster.leases import MAINTENANCE, LeaseKeeper, LeaseTiming
from bridge.cluster.router import Router, lease_name, shard_lease
from bridge.ports import ClusterStore, Subscription

log = logging.getLogger(__name__)

__all__ = ["Cluster", "HandoffPlace", "LeaseTiming", "Router", "lease_name", "shard_lease"]


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
    ) -> None:
        self.name = "cluster"
        self._store = store
        self._places = {place.platform: place for place in places}
        self._timing = timing
        self._heartbeat = heartbeat
        self.keeper = LeaseKeeper(store, instance=instance, timing=timing, serves=self._serves)
        self.router = Router(self.keeper, store, discord_shards=discord_shards)
        self._taker = instance
        self.consumer = HandoffConsumer(
            store,
            self._places,
            taker=instance,
            held=lambda: self.keeper.held,
            poll=timing.lease_seconds,
        )
        self.keeper.on_gained(self._gained)
        self._on_gain: list[Callable[[str], Awaitable[None]]] = []
        self._on_overrides: list[Callable[[], Awaitable[None]]] = []
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
        await self.consumer.stop_taking()

    async def stop(self) -> None:
        await self.consumer.wait(10.0)
        if self._ticks is not None:
            self._ticks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticks
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.keeper.release_all()
        if self._subscription is not None:
            await self._subscription.close()

    # --- inside --------------------------------------------------------------------------------

    def _serves(self) -> list[str]:
        return [lease for place in self._places.values() for lease in place.leases_served()]

    async def _run_ticks(self) -> None:
        while True:
            try:
                await self._heartbeat()
            except Exception as exc:
                log.warning("cluster: heartbeat not saved: %s", exc)
            try:
                await self.keeper.tick()
            except Exception:
                log.exception("cluster: a lease tick failed")
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
        elif topic == "overrides":
            for callback in self._on_overrides:
                self._spawn(callback())

    async def _gained(self, lease: str) -> None:
        reopened = await self._store.reopen_handoffs(lease, self._taker)
        if reopened:
            log.info("cluster: %d events queued for %s are taken again", reopened, lease)
        self.consumer.wake()
        for callback in self._on_gain:
            self._spawn(callback(lease))

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("cluster: a follow-up failed")

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
