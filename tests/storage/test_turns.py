"""SQLite's writer turns: first come, first served, with the write-behind flush going first."""

from __future__ import annotations

import asyncio

import pytest

from storage.turns import WriterTurns


async def test_writers_take_turns_in_arrival_order_and_priority_goes_first() -> None:
    turns = WriterTurns()
    order: list[str] = []
    release = asyncio.Event()

    async def write(name: str, *, priority: bool = False) -> None:
        async with turns.turn(priority=priority):
            order.append(name)
            if name == "holder":
                await release.wait()

    holder = asyncio.create_task(write("holder"))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(write(f"insert-{i}")) for i in range(3)]
    await asyncio.sleep(0)
    flush = asyncio.create_task(write("flush", priority=True))
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(holder, flush, *waiting)
    assert order == ["holder", "flush", "insert-0", "insert-1", "insert-2"]


async def test_a_cancelled_waiter_neither_holds_nor_skips_the_turn() -> None:
    turns = WriterTurns()
    order: list[str] = []
    release = asyncio.Event()

    async def write(name: str) -> None:
        async with turns.turn():
            order.append(name)
            if name == "holder":
                await release.wait()

    holder = asyncio.create_task(write("holder"))
    await asyncio.sleep(0)
    cancelled = asyncio.create_task(write("cancelled"))
    after = asyncio.create_task(write("after"))
    await asyncio.sleep(0)
    cancelled.cancel()
    release.set()
    await asyncio.gather(holder, after)
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert order == ["holder", "after"]
    async with turns.turn():  # free again
        order.append("last")
    assert order[-1] == "last"
