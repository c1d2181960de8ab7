"""`LeaseKeeper`: which Slack workspaces and Discord shards this instance answers for.

Each tick renews the leases it holds and takes the ones it can serve that nobody holds: free
ones (never held, or released by a planned stop) at once, expired ones only once this instance
has reached the database for a whole lease term, so that after a database outage the holder,
which comes back at the same time, renews its lease before anyone takes it. The first live
instance that serves a lease keeps it while it lives; another takes it when it stops or dies.

A lease counts as held only until its last renewal's term runs out by this process's clock, so a
holder cut off from the database stops taking new work before another instance can take over.
The process run a lease was taken from (it did not renew it for a term) counts as dead for
crash recovery, which then finishes its replies and answers what it had queued.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from bridge.ports import ClusterStore, Lease, StoreUnavailable

log = logging.getLogger(__name__)

# The lease whose holder runs the maintenance jobs (retention).
MAINTENANCE = "maintenance"
# A renewal's term counts from before its request left, less this share of it for clock drift
# (at most half a second).
MARGIN_SHARE = 0.1
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    lease_seconds: float
    takeover_seconds: float

    @property
    def term(self) -> float:
        """How long a renewal counts here: the lease, less a margin for clock drift."""
        return self.lease_seconds - min(0.5, self.lease_seconds * MARGIN_SHARE)

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
        known_dead: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        """`serves`: the leases this instance can answer for now (its connected platforms');
        `known_dead`: whether a process run is known to be dead (it said it stopped, or its pid
        is gone on this host), so its expired leases are taken without waiting."""
        self._known_dead = known_dead
        self._store = store
        self.instance = instance
        self._timing = timing
        self._serves = serves
        self._clock = clock
        self._valid_until: dict[str, float] = {}
        self._releasing: set[str] = set()
        self._busy: Counter[str] = Counter()  # messages being handled here, per lease
        self._live_elsewhere: set[str] = set()
        self._gained: list[Callable[[str], object]] = []
        self._reached_since: float | None = clock()  # None while the database is away
        self._acquiring = True
        # Process runs whose leases this instance took after they stopped renewing them.
        self.taken_from: set[str] = set()

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

    def serves(self, lease: str) -> bool:
        return lease in set(self._serves())

    def held_by_another(self, lease: str) -> bool:
        """Another live instance held `lease` at the last look."""
        return lease in self._live_elsewhere

    def on_gained(self, callback: Callable[[str], object]) -> None:
        """Called with each lease this instance takes (to take its queue and recover it)."""
        self._gained.append(callback)

    def working(self, lease: str) -> _Work:
        """Count a message being handled for `lease` (a lease being given up waits for it)."""
        return _Work(self._busy, lease)

    def stop_acquiring(self) -> None:
        """The bridge drains: keep renewing what it holds, take nothing more."""
        self._acquiring = False

    # --- the ticks -----------------------------------------------------------------------------

    async def tick(self) -> None:
        await self._renew()
        await self._finish_releases()
        leases = await self._call(self._store.leases(), "leases not read")
        if leases is None:
            return
        mine = set(self._valid_until)
        self._live_elsewhere = {
            lease.name for lease in leases if lease.live and lease.name not in mine
        }
        serves = set(self._serves())
        if self._acquiring:
            known = {lease.name: lease for lease in leases}
            for name in sorted((serves | {MAINTENANCE}) - mine - self._live_elsewhere):
                if await self._may_take(known.get(name)):
                    await self._acquire(name)
        for lost in mine - serves - {MAINTENANCE}:
            self._releasing.add(lost)  # its platform went away here: given up once idle
        held = self.held
        if held:  # events a previous holder took and never finished become takeable again
            await self._call(self._store.reopen_handoffs(held), "queued events not reopened")

    async def _may_take(self, lease: Lease | None) -> bool:
        if lease is None or lease.holder is None:
            return True  # never held, or released by a planned stop
        reached = self._reached_since
        # Expired: only once this instance has reached the database for a whole term, so a
        # holder that lost the database with everyone else renews first when it comes back;
        # at once when its holder is known to be dead.
        if reached is not None and self._clock() - reached >= self._timing.lease_seconds:
            return True
        if self._known_dead is None or lease.owner is None or reached is None:
            return False
        dead = await self._call(self._known_dead(lease.owner), "owners not read")
        return bool(dead)

    async def try_acquire(self, lease: str) -> bool:
        """Take `lease` now if nobody holds it (an event for a workspace not seen before)."""
        if self.holds(lease):
            return True
        if (
            not self._acquiring
            or lease in self._releasing
            or lease in self._live_elsewhere
            or not self.serves(lease)
            or self._reached_since is None
        ):
            return False
        if self._clock() - self._reached_since < self._timing.lease_seconds:
            return False  # the ticks decide, once the holder had its chance to renew
        return await self._acquire(lease)

    async def release_all(self) -> None:
        """A planned stop (after the drain): the next holders are woken at once."""
        held = list(self._valid_until)
        self._valid_until.clear()
        try:
            async with asyncio.timeout(self._timing.lease_seconds):
                await self._store.release_leases(held, self.instance)
        except Exception as exc:  # they expire instead
            log.warning("cluster: leases not released (%s); they expire in %gs", exc,
                        self._timing.lease_seconds)  # fmt: skip
        else:
            if held:
                log.info("cluster: released %s", ", ".join(held))

    async def _acquire(self, lease: str) -> bool:
        started = self._clock()
        acquired = await self._call(
            self._store.acquire_lease(lease, self.instance, self._timing.lease_seconds),
            f"lease {lease} not taken",
        )
        if acquired is None:
            self._live_elsewhere.add(lease)
            return False
        new = lease not in self._valid_until
        self._valid_until[lease] = started + self._timing.term
        self._live_elsewhere.discard(lease)
        if not new:
            return True
        if acquired.previous_owner is not None:
            self.taken_from.add(acquired.previous_owner)
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
        kept = await self._call(
            self._store.renew_leases(names, self.instance, self._timing.lease_seconds),
            "leases not renewed",
        )
        if kept is None:
            return
        for name in names:
            if name in kept:
                self._valid_until[name] = started + self._timing.term
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
        await self._call(self._store.release_leases(ours, self.instance), f"{ours} not released")

    async def _call(self, call: Awaitable[T], failed: str) -> T | None:
        """A store call bounded by a third of a term (a renewal stuck behind a busy pool must
        not outlive the lease); None when the database could not answer."""
        try:
            async with asyncio.timeout(self._timing.lease_seconds / 3):
                result = await call
        except (StoreUnavailable, OSError, TimeoutError) as exc:
            log.warning("cluster: %s: %s", failed, exc or type(exc).__name__)
            self._reached_since = None
            return None
        if self._reached_since is None:
            self._reached_since = self._clock()
        return result


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
