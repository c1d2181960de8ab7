"""SQLite's single writer, handed out in the event loop: queued writers take turns here rather than
in SQLite's busy handler, where a thousand concurrent writers time out ("database is locked")."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator


class WriterTurns:
    """A lock with two queues: writers go first come, first served, but a `priority` writer goes
    before every ordinary writer still waiting.

    The write-behind flush is a priority writer: it commits every streaming reply's progress at
    once, and behind a thousand queued inserts (a burst of new replies) it would wait for tens of
    seconds while the saves it carries, each holding a copy of a reply's text, piled up. Creating
    reply rows is the other: a reply whose placeholder is on screen waits for its row.
    """

    def __init__(self) -> None:
        self._held = False
        self._queues: tuple[deque[asyncio.Future[None]], deque[asyncio.Future[None]]] = (
            deque(),
            deque(),
        )

    @contextlib.asynccontextmanager
    async def turn(self, *, priority: bool = False) -> AsyncIterator[None]:
        await self._acquire(priority)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: bool) -> None:
        if not self._held and not any(self._queues):
            self._held = True
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._queues[0 if priority else 1]
        queue.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release()  # the turn was handed over just as the waiter was cancelled
            else:
                queue.remove(future)
            raise

    def _release(self) -> None:
        # The turn passes straight to the next waiter, so a newcomer cannot slip in between.
        for queue in self._queues:
            while queue:
                future = queue.popleft()
                if not future.done():
                    future.set_result(None)
                    return
        self._held = False
