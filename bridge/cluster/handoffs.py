"""`HandoffConsumer`: the holder of a lease answers the events other instances queued for it.

Woken by the database (LISTEN/NOTIFY) when an event is queued, and looking anyway every
`poll` seconds (a wake-up lost while the listening connection reconnected). Rows are taken in
queue order and each is answered through its platform's adapter as if it had arrived here;
a row is deleted once its message is handled. A holder that dies leaves its taken rows to the
next holder, which takes them again: the message's stored event claim keeps that from
answering twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from bridge.ports import ClusterStore, Handoff, StoreUnavailable

log = logging.getLogger(__name__)

BATCH = 50


class HandoffPlace(Protocol):
    """A platform adapter, for the cluster."""

    platform: str

    def leases_served(self) -> list[str]:
        """The leases this adapter can answer for now: its Slack workspace, its Discord shards
        (see `bridge.cluster.router`); empty while it is not connected."""
        ...

    async def take_handoff(self, payload: Mapping[str, Any]) -> None:
        """Handle an event another instance received, as if it had arrived here."""
        ...


class HandoffConsumer:
    def __init__(
        self,
        store: ClusterStore,
        places: Mapping[str, HandoffPlace],
        *,
        taker: str,
        held: Callable[[], list[str]],
        poll: float,
    ) -> None:
        self._store = store
        self._places = places
        self._taker = taker
        self._held = held
        self._poll = poll
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._taking = False

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._taking = True
        self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def stop_taking(self) -> None:
        """Take no more rows (the bridge drains); the ones taken are answered."""
        self._taking = False
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None

    async def wait(self, seconds: float) -> None:
        """Wait (at most `seconds`) for the events taken to be handled."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=seconds)

    async def _run(self) -> None:
        while self._taking:
            try:
                await asyncio.wait_for(self._wake.wait(), self._poll)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                while self._taking and await self.take_once():
                    pass
            except (StoreUnavailable, OSError) as exc:
                log.warning("cluster: queued events not read: %s", exc)
            except Exception:
                log.exception("cluster: reading queued events failed")

    async def take_once(self) -> int:
        """Take and start answering one batch; the number taken."""
        held = self._held()
        if not held:
            return 0
        taken = await self._store.take_handoffs(held, self._taker, BATCH)
        for handoff in taken:
            place = self._places.get(handoff.platform)
            if place is None:  # no adapter here for it: finished, logged (a misconfiguration)
                log.error("cluster: event %s is for %s, not enabled here; dropped",
                          handoff.event_id, handoff.platform)  # fmt: skip
                await self._store.finish_handoff(handoff.id)
                continue
            task = asyncio.get_running_loop().create_task(self._answer(place, handoff))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(taken)

    async def _answer(self, place: HandoffPlace, handoff: Handoff) -> None:
        where = {"platform": handoff.platform, "event_id": handoff.event_id}
        try:
            await place.take_handoff(handoff.payload)
        except Exception:
            # A payload this version cannot handle must not come back for ever.
            log.exception("cluster: the queued event %s failed", handoff.event_id, extra=where)
        try:
            await self._store.finish_handoff(handoff.id)
        except Exception as exc:  # taken again after a restart; its stored claim stops a repeat
            log.warning("cluster: queued event %s not cleared: %s", handoff.event_id, exc,
                        extra=where)  # fmt: skip
