"""Group commit: requests that queue for the database while it is busy go in together, in one
transaction, when their turn comes.

A burst of inbound messages (a thousand users writing at once, or a platform replaying a backlog)
would otherwise commit one transaction each, one after another on SQLite, each costing a dozen
round trips to the database thread; new replies then start a few dozen a second. In a batch the
same work is three statements and one commit, however many messages it holds. The reply rows those
messages need are created the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")
R = TypeVar("R")

Begin = Callable[[], contextlib.AbstractAsyncContextManager[AsyncConnection]]
RunBatch = Callable[[AsyncConnection, list[T]], Awaitable[list[R]]]


class GroupCommit(Generic[T, R]):
    """`submit` waits until its request is committed and returns its result.

    A batch that fails for a reason of its own rows (a value the database refuses) is tried again
    in halves, down to single requests, so one bad row fails alone and the others commit; a batch
    that fails because the database is unavailable (`passing` says which errors those are) fails
    every request in it at once, and the next batch is tried afresh.
    """

    def __init__(
        self,
        begin: Begin,
        run_batch: RunBatch[T, R],
        *,
        max_batch: int = 200,
        passing: Callable[[BaseException], bool] = lambda _: False,
    ) -> None:
        self._begin = begin
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._passing = passing
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._runner: asyncio.Task[None] | None = None
        self.batches = 0

    async def submit(self, request: T) -> R:
        loop = asyncio.get_running_loop()
        result: asyncio.Future[R] = loop.create_future()
        self._queue.append((request, result))
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._run())
        # A caller that gives up does not take the others' batch down with it.
        return await asyncio.shield(result)

    async def _run(self) -> None:
        while self._queue:
            batch: list[tuple[T, asyncio.Future[R]]] = []
            try:
                async with self._begin() as conn:
                    # Taken once the database is ours: what queued meanwhile joins this batch.
                    batch = self._take()
                    results = await self._run_batch(conn, [request for request, _ in batch])
            except BaseException as exc:
                if not batch:  # failed before taking its requests (no connection): they fail
                    batch = self._take()
                if not isinstance(exc, Exception):
                    _fail(batch, exc)
                    for _, future in self._queue:
                        future.cancel()
                    self._queue.clear()
                    raise
                if len(batch) > 1 and not self._passing(exc):
                    await self._in_halves(batch)
                else:
                    _fail(batch, exc)
                continue
            self._settle(batch, results)

    async def _in_halves(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        middle = len(batch) // 2
        for half in (batch[:middle], batch[middle:]):
            try:
                async with self._begin() as conn:
                    results = await self._run_batch(conn, [request for request, _ in half])
            except Exception as exc:
                if len(half) > 1 and not self._passing(exc):
                    await self._in_halves(half)
                else:
                    _fail(half, exc)
                continue
            self._settle(half, results)

    def _settle(self, batch: list[tuple[T, asyncio.Future[R]]], results: list[R]) -> None:
        self.batches += 1
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch = self._queue[: self._max_batch]
        del self._queue[: len(batch)]
        return batch


def _fail(batch: list[tuple[T, asyncio.Future[R]]], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
