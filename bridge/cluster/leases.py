"""`LeaseKeeper`: which Slack workspaces and Discord shards this instance answers for.

Each tick renews the leases it holds, takes free or expired ones it can serve (up to its fair
share: the leases it can serve over the live instances), and gives one back gracefully when it
holds more than its share while others are alive: new events for that lease go to the queue at
once, the replies it is producing finish, then the lease is released and the next holder woken.
A lease counts as held only until its last renewal's term runs out by this process's clock, so a
holder cut off from the database stops taking new work before another instance can take over.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bridge.ports import ClusterStore, StoreUnavailable

log = logging.getLogger(__name__)

# The lease whose holder runs the maintenance jobs (retention); not counted in the fair share.
MAINTENANCE = "maintenance"
# A renewal's term counts from before its request left, less this margin for clock drift.
MARGIN_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    lease_seconds: float
    takeover_seconds: float

    @property
    def tick(self) -> float:
        """Renew well within a term, and look for expired leases often enough that a dead
        holder's are taken within takeover_seconds of its last renewal."""
        return max(0.05, min(self.lease_seconds / 3, self.takeover_seconds - self.lease_seconds))


class LeaseKeeper:
    def __init__(
        self,
        store: ClusterStore,
        *,
        instance: str,
        timing: LeaseTiming,
        serves: Callable[[], Iterable[str]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`serves`: the leases this instance can answer for now (its connected platforms')."""
        self._store = store
        self.instance = instance
        self._timing = timing
        self._serves = serves
        self._clock = clock
        self._valid_until: dict[str, float] = {}
        self._releasing: set[str] = set()
        self._busy: Counter[str] = Counter()  # replies being produced here, per lease
        self._live_elsewhere: set[str] = set()
        self._gained: list[Callable[[str], object]] = []

    # --- what the rest of the process asks -----------------------------------------------------

    def holds(self, lease: str) -> bool:
        """New work for `lease` is this instance's."""
        if lease in self._releasing:
            return False
        until = self._valid_until.get(lease)
        return until is not None and self._clock() < until

    @property
    def held(self) -> list[str]:
        return sorted(lease for lease in self._valid_until if self.holds(lease))

    def held_by_another(self, lease: str) -> bool:
        """Another live instance held `lease` at the last look."""
        return lease in self._live_elsewhere

    def on_gained(self, callback: Callable[[str], object]) -> None:
        """Called with each lease this instance takes (to take its queue and recover it)."""
        self._gained.append(callback)

    def working(self, lease: str) -> _Work:
        """Count a reply being produced for `lease` (a lease being given back waits for it)."""
        return _Work(self._busy, lease)

    # --- the ticks -----------------------------------------------------------------------------

    async def tick(self) -> None:
        await self._renew()
        await self._finish_releases()
        try:
            leases = await self._store.leases()
            live = await self._store.live_instances(self._timing.takeover_seconds)
        except (StoreUnavailable, OSError) as exc:
            log.warning("cluster: leases not read: %s", exc)
            return
        mine = set(self._valid_until)
        self._live_elsewhere = {
            lease.name for lease in leases if lease.live and lease.name not in mine
        }
        serves = set(self._serves())
        held_elsewhere = {lease.name: lease.holder for lease in leases if lease.live}
        fair = math.ceil(len(serves) / max(1, live)) if serves else 0
        counted = len(mine - {MAINTENANCE})
        for name in sorted(serves | {MAINTENANCE}):
            if name in mine or name in held_elsewhere:
                continue
            if name != MAINTENANCE and counted >= fair:
                continue
            if await self._acquire(name):
                counted += name != MAINTENANCE
        if counted > fair and live > 1 and not self._releasing:
            # One at a time, the newest first: the others keep their place.
            extra = max(mine - {MAINTENANCE} - self._releasing)
            log.info("cluster: giving %s back (holding %d, fair share %d of %d instances)",
                     extra, counted, fair, live)  # fmt: skip
            self._releasing.add(extra)
        for lost in mine - serves - {MAINTENANCE}:
            self._releasing.add(lost)  # its platform went away here

    async def try_acquire(self, lease: str) -> bool:
        """Take `lease` now if nobody holds it (an event for a workspace not seen before)."""
        if self.holds(lease):
            return True
        if lease in self._live_elsewhere or lease not in set(self._serves()):
            return False
        return await self._acquire(lease)

    async def release_all(self) -> None:
        """A planned stop (after the drain): the next holders are woken at once."""
        held = list(self._valid_until)
        self._valid_until.clear()
        try:
            await self._store.release_leases(held, self.instance)
        except Exception as exc:  # they expire instead
            log.warning("cluster: leases not released (%s); they expire in %gs", exc,
                        self._timing.lease_seconds)  # fmt: skip
        else:
            if held:
                log.info("cluster: released %s", ", ".join(held))

    async def _acquire(self, lease: str) -> bool:
        started = self._clock()
        try:
            taken = await self._store.acquire_lease(
                lease, self.instance, self._timing.lease_seconds
            )
        except (StoreUnavailable, OSError) as exc:
            log.warning("cluster: lease %s not taken: %s", lease, exc)
            return False
        if not taken:
            self._live_elsewhere.add(lease)
            return False
        self._valid_until[lease] = started + self._timing.lease_seconds - MARGIN_SECONDS
        self._live_elsewhere.discard(lease)
        log.info("cluster: %s holds %s", self.instance, lease)
        for callback in self._gained:
            try:
                outcome = callback(lease)
                if asyncio.iscoroutine(outcome):
                    await outcome
            except Exception:
                log.exception("cluster: taking over %s failed", lease)
        return True

    async def _renew(self) -> None:
        names = list(self._valid_until)
        if not names:
            return
        started = self._clock()
        try:
            kept = await self._store.renew_leases(names, self.instance, self._timing.lease_seconds)
        except (StoreUnavailable, OSError) as exc:
            log.warning("cluster: leases not renewed: %s", exc)
            return
        for name in names:
            if name in kept:
                self._valid_until[name] = started + self._timing.lease_seconds - MARGIN_SECONDS
            else:
                log.warning("cluster: lease %s was taken by another instance", name)
                del self._valid_until[name]
                self._releasing.discard(name)

    async def _finish_releases(self) -> None:
        done = [lease for lease in self._releasing if not self._busy[lease]]
        if not done:
            return
        ours = [lease for lease in done if lease in self._valid_until]
        for lease in done:
            self._releasing.discard(lease)
            self._valid_until.pop(lease, None)
        try:
            await self._store.release_leases(ours, self.instance)
        except (StoreUnavailable, OSError) as exc:
            log.warning("cluster: %s not released (%s); it expires instead", ours, exc)


class _Work:
    def __init__(self, busy: Counter[str], lease: str) -> None:
        self._busy = busy
        self._lease = lease

    def __enter__(self) -> None:
        self._busy[self._lease] += 1

    def __exit__(self, *_: object) -> None:
        self._busy[self._lease] -= 1
        if self._busy[self._lease] <= 0:
            del self._busy[self._lease]
