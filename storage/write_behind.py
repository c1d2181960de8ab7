"""Coalesces reply writes: every save of every streaming reply that falls due within one short
window is committed in a single transaction (one executemany per column set).

At a thousand concurrent replies that is a few dozen commits a second instead of a thousand, which
SQLite's single writer can sustain. Each caller still awaits its own write, so "written" means
committed, and a reply's final save can never be overtaken by an older progress save.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import Table, bindparam, update
from sqlalchemy.ext.asyncio import AsyncConnection

log = logging.getLogger(__name__)

Begin = Callable[[], contextlib.AbstractAsyncContextManager[AsyncConnection]]


class WriteBehind:
    def __init__(self, table: Table, begin: Begin, *, window: float = 0.05) -> None:
        self._table = table
        self._begin = begin
        self._window = window
        self._pending: dict[int, dict[str, Any]] = {}
        self._batch: asyncio.Future[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        # Batches commit one after another: a newer save never lands before an older one.
        self._flush_lock = asyncio.Lock()
        self.rows_written = 0
        self.commits = 0

    async def save(self, row_id: int, values: dict[str, Any]) -> None:
        """Queue an update of row `row_id` and wait until it is committed."""
        previous = self._pending.get(row_id)
        # A later save of the same row supersedes the earlier one within a window.
        self._pending[row_id] = {**previous, **values} if previous else dict(values)
        if self._batch is None:
            loop = asyncio.get_running_loop()
            self._batch = loop.create_future()
            self._flusher = loop.create_task(self._flush_later(self._batch))
        await asyncio.shield(self._batch)

    async def _flush_later(self, batch: asyncio.Future[None]) -> None:
        await asyncio.sleep(self._window)
        try:
            async with self._flush_lock, self._begin() as conn:
                # Taken only once the database is ours: saves that arrive while this batch waits
                # for it join the batch (newest values per row), so a busy database holds one
                # queued save per reply, not one per window.
                pending, self._pending = self._pending, {}
                self._batch = None
                await self._write(conn, pending)
        except BaseException as exc:
            if self._batch is batch:  # failed before taking its rows: they fail with it
                self._pending, self._batch = {}, None
            batch.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            self.rows_written += len(pending)
            self.commits += 1
            batch.set_result(None)

    async def _write(self, conn: AsyncConnection, pending: dict[int, dict[str, Any]]) -> None:
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row_id, values in pending.items():
            groups.setdefault(tuple(sorted(values)), []).append({"_row_id": row_id, **values})
        for columns, rows in groups.items():
            statement = (
                update(self._table)
                .where(self._table.c.id == bindparam("_row_id"))
                .values({name: bindparam(name) for name in columns})
            )
            await conn.execute(statement, rows)

    async def close(self) -> None:
        """Flush what is queued (the process is stopping)."""
        if self._flusher is not None and not self._flusher.done():
            with contextlib.suppress(Exception):
                await self._flusher
