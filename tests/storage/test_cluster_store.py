"""The cluster's storage on SQLite and PostgreSQL: leases that one process run holds at a time,
the handoff queue that never gives one event to two takers, and wake-ups (PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bridge.ports import Acquired
from storage import SqlChatStore, create_engine, migrate


@pytest.fixture
async def stores(database_url: str) -> AsyncIterator[tuple[SqlChatStore, SqlChatStore]]:
    """Two instances' stores on one database."""
    await migrate(database_url)
    engine = create_engine(database_url)
    yield SqlChatStore(engine, owner="run-a"), SqlChatStore(engine, owner="run-b")
    await engine.dispose()


async def test_a_lease_has_one_holder_until_it_expires_or_is_released(
    stores: tuple[SqlChatStore, SqlChatStore],
) -> None:
    a, b = stores
    assert await a.acquire_lease("slack:T1", "a", 30) == Acquired(None)
    assert await b.acquire_lease("slack:T1", "b", 30) is None
    assert await a.acquire_lease("slack:T1", "a", 30) == Acquired(None)  # its own: renewed
    (lease,) = await b.leases()
    assert (lease.name, lease.holder, lease.owner, lease.live) == ("slack:T1", "a", "run-a", True)
    assert await b.renew_leases(["slack:T1"], "b", 30) == set()  # b never held it
    assert await a.renew_leases(["slack:T1", "slack:T2"], "a", 30) == {"slack:T1"}

    await a.release_leases(["slack:T1"], "a")
    (lease,) = await a.leases()
    assert (lease.holder, lease.live) == (None, False)
    assert await b.acquire_lease("slack:T1", "b", 30) == Acquired(None)  # released: no one's
    assert await a.renew_leases(["slack:T1"], "a", 30) == set()  # taken: a learns it lost it


async def test_an_expired_lease_is_taken_by_another_run_which_learns_whose_it_was(
    stores: tuple[SqlChatStore, SqlChatStore],
) -> None:
    a, b = stores
    assert await a.acquire_lease("discord:shard:0", "a", 0.2)
    assert await b.acquire_lease("discord:shard:0", "b", 30) is None
    await asyncio.sleep(0.4)
    (lease,) = await b.leases()
    assert not lease.live
    assert await b.acquire_lease("discord:shard:0", "b", 30) == Acquired("run-a")
    # The previous holder's renewal fails: it must stop answering for that shard.
    assert await a.renew_leases(["discord:shard:0"], "a", 30) == set()


async def test_a_restarted_instance_with_the_same_name_waits_for_its_old_lease(
    database_url: str,
) -> None:
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        old, new = SqlChatStore(engine, owner="run-1"), SqlChatStore(engine, owner="run-2")
        assert await old.acquire_lease("slack:T1", "bridge-a", 30)
        assert not await new.acquire_lease("slack:T1", "bridge-a", 30)
    finally:
        await engine.dispose()


async def test_handoffs_queue_each_event_once_and_are_taken_oldest_first(
    stores: tuple[SqlChatStore, SqlChatStore],
) -> None:
    a, b = stores
    assert await a.hand_over("slack:T1", "slack", "Ev1", "c1", {"text": "first"})
    assert not await b.hand_over("slack:T1", "slack", "Ev1", "c1", {"text": "first"})  # a retry
    assert await b.hand_over("slack:T1", "slack", "Ev2", "c1", {"text": "second"})
    assert await b.hand_over("slack:T2", "slack", "Ev3", "c2", {"text": "other workspace"})

    taken = await a.take_handoffs(["slack:T1"], 10)
    assert [(h.event_id, h.chat, h.payload["text"]) for h in taken] == [
        ("Ev1", "c1", "first"),
        ("Ev2", "c1", "second"),
    ]
    assert await b.take_handoffs(["slack:T1"], 10) == []  # taken already
    await b.finish_handoff(taken[0].id)  # not b's: nothing happens
    await a.finish_handoff(taken[0].id)
    # A new holder of T1 takes again what the previous one took and did not finish.
    assert await b.reopen_handoffs(["slack:T1"]) == 1
    (again,) = await b.take_handoffs(["slack:T1"], 10)
    assert again.event_id == "Ev2"
    await b.return_handoff(again.id)  # could not be handled now: back in the queue
    (retried,) = await a.take_handoffs(["slack:T1"], 10)
    assert retried.event_id == "Ev2"
    (other,) = await b.take_handoffs(["slack:T2"], 10)
    assert other.payload == {"text": "other workspace"}


async def test_a_restarted_run_takes_back_what_its_previous_run_took(database_url: str) -> None:
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        old, new = SqlChatStore(engine, owner="run-1"), SqlChatStore(engine, owner="run-2")
        await old.hand_over("slack:T1", "slack", "Ev1", "c1", {})
        assert len(await old.take_handoffs(["slack:T1"], 10)) == 1  # then it was killed
        assert await new.reopen_handoffs(["slack:T1"]) == 1
        assert [h.event_id for h in await new.take_handoffs(["slack:T1"], 10)] == ["Ev1"]
    finally:
        await engine.dispose()


async def test_a_payload_that_is_not_an_object_does_not_stop_the_queue(
    stores: tuple[SqlChatStore, SqlChatStore],
) -> None:
    a, _ = stores
    await a.hand_over("slack:T1", "slack", "Ev1", "c1", [1, 2])  # type: ignore[arg-type]
    await a.hand_over("slack:T1", "slack", "Ev2", "c1", {"ok": True})
    taken = await a.take_handoffs(["slack:T1"], 10)
    assert [h.payload for h in taken] == [{}, {"ok": True}]


async def test_live_instances_are_the_processes_with_a_recent_heartbeat(
    stores: tuple[SqlChatStore, SqlChatStore],
) -> None:
    a, b = stores
    await a.register_owner("host", 1)
    await b.register_owner("host", 2)
    assert await a.live_instances(60) == 2
    await b.release_owner()
    assert await a.live_instances(60) == 1


async def test_takers_at_once_never_get_the_same_handoff(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: nothing runs at once there")
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        queue = SqlChatStore(engine, owner="receiver")
        for n in range(200):
            await queue.hand_over("slack:T1", "slack", f"Ev{n}", f"c{n % 5}", {"n": n})
        takers = [SqlChatStore(engine, owner=f"taker-{i}") for i in range(4)]

        async def drain(store: SqlChatStore) -> list[int]:
            got: list[int] = []
            while batch := await store.take_handoffs(["slack:T1"], 7):
                got.extend(h.payload["n"] for h in batch)
            return got

        results = await asyncio.gather(*(drain(t) for t in takers))
        everything = [n for got in results for n in got]
        assert sorted(everything) == list(range(200))  # each exactly once
        assert all(got == sorted(got) for got in results)  # each taker in queue order
    finally:
        await engine.dispose()


async def test_a_handoff_wakes_the_other_instances(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; on SQLite the consumer polls")
    await migrate(database_url)
    engine = create_engine(database_url)
    woken: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    try:
        holder = SqlChatStore(engine, owner="holder")
        subscription = await holder.subscribe(
            lambda topic, detail: woken.put_nowait((topic, detail))
        )
        assert subscription is not None
        try:
            receiver = SqlChatStore(engine, owner="receiver")
            await receiver.hand_over("slack:T9", "slack", "Ev1", "c1", {})
            assert await asyncio.wait_for(woken.get(), 10) == ("handoff", "slack:T9")
            await receiver.wake("overrides")
            assert await asyncio.wait_for(woken.get(), 10) == ("overrides", "")
        finally:
            await subscription.close()
    finally:
        await engine.dispose()
