"""Group commit: queued requests share one transaction; a failed batch fails only its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from storage.group_commit import GroupCommit


class Database:
    def __init__(self) -> None:
        self.free = asyncio.Event()
        self.free.set()
        self.transactions = 0
        self.broken = False

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[Any]:
        if self.broken:
            raise ConnectionError("database unreachable")
        await self.free.wait()
        self.transactions += 1
        yield object()


async def test_requests_queued_while_the_database_is_busy_share_one_transaction() -> None:
    db = Database()
    seen: list[list[int]] = []

    async def run(conn: Any, batch: list[int]) -> list[int]:
        seen.append(batch)
        if 13 in batch:
            raise ValueError("constraint violated")
        return [n * 10 for n in batch]

    group: GroupCommit[int, int] = GroupCommit(db.begin, run, max_batch=3)
    assert await group.submit(1) == 10
    db.free.clear()  # busy: the next requests queue
    waiting = [asyncio.create_task(group.submit(n)) for n in (2, 3, 4, 5)]
    await asyncio.sleep(0.01)
    db.free.set()
    assert await asyncio.gather(*waiting) == [20, 30, 40, 50]
    assert seen == [[1], [2, 3, 4], [5]]  # at most max_batch at once, in arrival order
    # A failing batch fails its requests only; the next batch commits.
    db.free.clear()
    failing = [asyncio.create_task(group.submit(n)) for n in (12, 13, 14, 15)]
    await asyncio.sleep(0.01)
    db.free.set()
    outcomes = await asyncio.gather(*failing, return_exceptions=True)
    assert [type(o).__name__ for o in outcomes[:3]] == ["ValueError"] * 3
    assert outcomes[3] == 150
    assert db.transactions == 5


async def test_an_unreachable_database_fails_the_requests_instead_of_retrying_forever() -> None:
    db = Database()
    db.broken = True

    async def run(conn: Any, batch: list[int]) -> list[int]:
        return batch

    group: GroupCommit[int, int] = GroupCommit(db.begin, run)
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(group.submit(1), timeout=2)
    db.broken = False
    assert await group.submit(2) == 2
