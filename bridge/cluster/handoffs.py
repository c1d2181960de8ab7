"""`HandoffConsumer`: the holder of a lease answers the events other instances queued for it.

Woken by the database (LISTEN/NOTIFY) when an event is queued, and looking anyway every
`poll` seconds (a wake-up lost while the listening connection reconnected). Rows are taken in
queue order; the events of one chat are handled one after another (the next one only once the
previous is answered, as the chat's own replies go), other chats' at once. Each is answered
through its platform's adapter as if it had arrived here, and its row deleted once handled. An
event that cannot be handled now (the database or the platform away) goes back to the queue.
A holder that dies leaves its taken rows to the next holder, which takes them again: the
message's stored event claim keeps that from answering twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from bridge.ports import ClusterStore, Handoff, PlatformUnavailable, StoreUnavailable

log = logging.getLogger(__name__)

BATCH = 50
# An event that could not be handled goes back to the queue after this pause.
RETRY_PAUSE = 1.0
# Failures that pass: the event is tried again (anything else is a fault of the event).
PASSING = (StoreUnavailable, PlatformUnavailable, OSError, TimeoutError, ConnectionError)


class NotReady(Exception):
    """The adapter cannot handle a handed event yet (its platform is not connected)."""


class HandoffPlace(Protocol):
    """A platform adapter, for the cluster."""

    platform: str

    def leases_served(self) -> list[str]:
        """The leases this adapter can answer for: its Slack workspace, its Discord shards
        (see `bridge.cluster.router`); empty until it has connected once."""
        ...

    async def take_handoff(self, payload: Mapping[str, Any]) -> None:
        """Handle an event another instance received, here, whatever its lease now. Raises
        ValueError for a payload it cannot read, NotReady or a passing failure to be retried."""
        ...


class HandoffConsumer:
    def __init__(
        self,
        store: ClusterStore,
        places: Mapping[str, HandoffPlace],
        *,
        held: Callable[[], list[str]],
        poll: float,
    ) -> None:
        self._store = store
        self._places = places
        self._held = held
        self._poll = poll
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_of_chat: dict[str, asyncio.Task[None]] = {}
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

    async def stop(self, seconds: float) -> None:
        """Wait (at most `seconds`) for the events taken to be handled; cancel the rest (their
        rows stay taken by this run, and the next holder takes them again)."""
        await self.stop_taking()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def wait(self, seconds: float) -> None:
        """Wait (at most `seconds`) for the events taken to be handled (tests)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=seconds)

    async def _run(self) -> None:
        while self._taking:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)
            self._wake.clear()
            try:
                while self._taking and await self.take_once():
                    pass
            except PASSING as exc:
                log.warning("cluster: queued events not read: %s", exc)
            except Exception:
                log.exception("cluster: reading queued events failed")

    async def take_once(self) -> int:
        """Take one batch and start handling it; the number taken."""
        held = self._held()
        if not held:
            return 0
        taken = await self._store.take_handoffs(held, BATCH)
        for handoff in taken:  # nothing here may raise before every row has its task
            before = self._last_of_chat.get(handoff.chat)
            task = asyncio.get_running_loop().create_task(self._handle(handoff, before))
            self._last_of_chat[handoff.chat] = task
            self._tasks.add(task)
            task.add_done_callback(self._done)
        return len(taken)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        for chat, last in list(self._last_of_chat.items()):
            if last is task:
                del self._last_of_chat[chat]

    async def _handle(self, handoff: Handoff, before: asyncio.Task[None] | None) -> None:
        if before is not None:  # the chat's previous event first: its chat, its answer
            await asyncio.gather(before, return_exceptions=True)
        where = {"platform": handoff.platform, "event_id": handoff.event_id}
        place = self._places.get(handoff.platform)
        try:
            if place is None:
                raise ValueError(f"{handoff.platform} is not enabled on this instance")
            await place.take_handoff(handoff.payload)
        except (NotReady, *PASSING) as exc:
            log.warning("cluster: queued event %s not handled yet (%s); back in the queue",
                        handoff.event_id, exc or type(exc).__name__, extra=where)  # fmt: skip
            await asyncio.sleep(RETRY_PAUSE)
            await self._settle(self._store.return_handoff(handoff.id), handoff, where)
            self.wake()
            return
        except Exception:
            # A payload this version cannot handle must not come back for ever.
            log.exception("cluster: queued event %s dropped", handoff.event_id, extra=where)
        await self._settle(self._store.finish_handoff(handoff.id), handoff, where)

    async def _settle(self, call: Any, handoff: Handoff, where: Mapping[str, object]) -> None:
        try:
            await call
        except Exception as exc:  # taken again by the next holder; its stored claim stops a repeat
            log.warning("cluster: queued event %s not cleared: %s", handoff.event_id, exc,
                        extra=where)  # fmt: skip
