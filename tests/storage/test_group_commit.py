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
    # A batch failing on one bad request is tried again in halves: only that request fails.
    db.free.clear()
    failing = [asyncio.create_task(group.submit(n)) for n in (12, 13, 14, 15)]
    await asyncio.sleep(0.01)
    db.free.set()
    outcomes = await asyncio.gather(*failing, return_exceptions=True)
    assert outcomes[0] == 120 and outcomes[2] == 140 and outcomes[3] == 150
    assert isinstance(outcomes[1], ValueError)
    assert seen[3:] == [[12, 13, 14], [12], [13, 14], [13], [14], [15]]


async def test_one_bad_request_among_a_hundred_fails_alone() -> None:
    db = Database()

    async def run(conn: Any, batch: list[int]) -> list[int]:
        if 57 in batch:
            raise ValueError("value refused")
        return batch

    group: GroupCommit[int, int] = GroupCommit(db.begin, run)
    db.free.clear()
    submitted = [asyncio.create_task(group.submit(n)) for n in range(100)]
    await asyncio.sleep(0.01)
    db.free.set()
    outcomes = await asyncio.gather(*submitted, return_exceptions=True)
    assert [o for o in outcomes if isinstance(o, Exception)] == [outcomes[57]]
    assert [o for o in outcomes if not isinstance(o, Exception)] == [
        n for n in range(100) if n != 57
    ]
    # Halving: about 2 log2(100) transactions, not one per request.
    assert db.transactions <= 16


async def test_a_passing_failure_fails_the_batch_at_once_without_splitting() -> None:
    db = Database()
    calls: list[list[int]] = []

    async def run(conn: Any, batch: list[int]) -> list[int]:
        calls.append(batch)
        raise TimeoutError("database locked")

    passing = lambda exc: isinstance(exc, TimeoutError)  # noqa: E731
    group: GroupCommit[int, int] = GroupCommit(db.begin, run, passing=passing)
    db.free.clear()
    submitted = [asyncio.create_task(group.submit(n)) for n in range(10)]
    await asyncio.sleep(0.01)
    db.free.set()
    outcomes = await asyncio.gather(*submitted, return_exceptions=True)
    assert all(isinstance(o, TimeoutError) for o in outcomes)
    assert calls == [list(range(10))]


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
