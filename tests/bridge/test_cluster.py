"""The cluster's core on the real store (SQLite and PostgreSQL): leases taken, kept, shared
fairly and given back without dropping work; queued events answered by the holder only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from bridge.cluster import Cluster, LeaseTiming
from bridge.cluster.handoffs import HandoffConsumer
from bridge.cluster.leases import MAINTENANCE, LeaseKeeper
from bridge.cluster.router import Router, lease_name, shard_lease
from storage import SqlChatStore, create_engine, migrate

TIMING = LeaseTiming(lease_seconds=30, takeover_seconds=45)


class Place:
    """A platform adapter as the cluster sees it: the leases it serves, the events it takes."""

    def __init__(self, platform: str, leases: list[str]) -> None:
        self.platform = platform
        self.leases = leases
        self.taken: list[Mapping[str, Any]] = []
        self.release = asyncio.Event()
        self.release.set()

    def leases_served(self) -> list[str]:
        return list(self.leases)

    async def take_handoff(self, payload: Mapping[str, Any]) -> None:
        self.taken.append(payload)
        await self.release.wait()


@pytest.fixture
async def engine_url(database_url: str) -> AsyncIterator[str]:
    await migrate(database_url)
    yield database_url


async def stores(url: str, *owners: str) -> tuple[Any, list[SqlChatStore]]:
    engine = create_engine(url)
    made = [SqlChatStore(engine, owner=owner) for owner in owners]
    for n, store in enumerate(made):
        await store.register_owner("test-host", 10_000_000 + n)
    return engine, made


def keeper(store: SqlChatStore, name: str, serves: list[str]) -> LeaseKeeper:
    return LeaseKeeper(store, instance=name, timing=TIMING, serves=lambda: serves)


def test_a_guild_is_on_the_shard_discord_sends_it_to() -> None:
    guild = (7 << 22) | 12345  # a snowflake whose timestamp part is 7: shard 7 % 4 == 3
    assert lease_name("discord", str(guild), discord_shards=4) == shard_lease(3)
    assert lease_name("discord", str(guild), discord_shards=1) == shard_lease(0)
    assert lease_name("discord", "", discord_shards=4) == shard_lease(0)  # DMs: shard 0
    assert lease_name("slack", "T1") == "slack:T1"


async def test_one_instance_holds_each_lease_and_the_next_takes_it_when_released(
    engine_url: str,
) -> None:
    engine, (a_store, b_store) = await stores(engine_url, "run-a", "run-b")
    try:
        a = keeper(a_store, "a", ["slack:T1"])
        b = keeper(b_store, "b", ["slack:T1"])
        await a.tick()
        await b.tick()
        assert a.holds("slack:T1") and not b.holds("slack:T1")
        assert b.held_by_another("slack:T1")
        # Exactly one of them runs the maintenance jobs.
        assert a.holds(MAINTENANCE) != b.holds(MAINTENANCE)
        await a.release_all()
        assert not a.holds("slack:T1")
        await b.tick()
        assert b.holds("slack:T1") and b.holds(MAINTENANCE)
    finally:
        await engine.dispose()


async def test_a_lease_left_to_expire_is_taken_over(engine_url: str) -> None:
    engine, (a_store, b_store) = await stores(engine_url, "run-a", "run-b")
    short = LeaseTiming(lease_seconds=1.0, takeover_seconds=1.5)
    try:
        a = LeaseKeeper(a_store, instance="a", timing=short, serves=lambda: ["slack:T1"])
        b = LeaseKeeper(b_store, instance="b", timing=short, serves=lambda: ["slack:T1"])
        gained: list[str] = []
        b.on_gained(gained.append)
        await a.tick()
        assert a.holds("slack:T1")
        await b.tick()
        assert not b.holds("slack:T1")
        await asyncio.sleep(1.2)  # a stops renewing (it died)
        assert not a.holds("slack:T1")  # by its own clock too: it takes no new work
        await b.tick()
        assert b.holds("slack:T1")
        assert "slack:T1" in gained
        await a.tick()  # a comes back: its renewal fails, it does not answer for T1 again
        assert not a.holds("slack:T1")
    finally:
        await engine.dispose()


async def test_leases_are_shared_fairly_and_a_busy_one_is_given_back_after_its_work(
    engine_url: str,
) -> None:
    engine, (a_store,) = await stores(engine_url, "run-a")
    names = ["slack:T1", "slack:T2", "slack:T3", "slack:T4"]
    try:
        a = keeper(a_store, "a", names)
        await a.tick()
        assert a.held == sorted([*names, MAINTENANCE])  # alone: all of them
        b_store = SqlChatStore(engine, owner="run-b")
        await b_store.register_owner("test-host", 10_000_001)  # b joins
        b = keeper(b_store, "b", names)
        # The lease a gives back first is busy: it waits for that reply to end.
        with a.working("slack:T4"):
            await a.tick()
            assert not a.holds("slack:T4")  # new work for T4 already goes to the queue
            await b.tick()
            assert not b.holds("slack:T4")  # not released yet: a is still answering in it
        for _ in range(4):
            await a.tick()
            await b.tick()
        a_leases = set(a.held) - {MAINTENANCE}
        b_leases = set(b.held) - {MAINTENANCE}
        assert len(a_leases) == len(b_leases) == 2
        assert a_leases | b_leases == set(names)
    finally:
        await engine.dispose()


async def test_queued_events_are_answered_by_the_holder_in_queue_order(engine_url: str) -> None:
    engine, (holder_store, receiver_store) = await stores(engine_url, "holder", "receiver")
    try:
        place = Place("slack", ["slack:T1"])
        holder = keeper(holder_store, "holder", ["slack:T1"])
        await holder.tick()
        receiver = keeper(receiver_store, "receiver", ["slack:T1"])
        await receiver.tick()
        router = Router(receiver, receiver_store)
        assert not await router.answers_here("slack", "T1")
        for n in range(3):
            await router.hand_over("slack", "T1", f"Ev{n}", lambda n=n: {"n": n}, {})
        await router.hand_over("slack", "T1", "Ev0", lambda: {"n": 0}, {})  # a retry elsewhere
        other = Place("slack", [])
        nobody = HandoffConsumer(
            receiver_store, {"slack": other}, taker="receiver", held=lambda: receiver.held,
            poll=1.0,
        )  # fmt: skip
        assert await nobody.take_once() == 0  # the receiver does not hold T1: it takes nothing
        consumer = HandoffConsumer(
            holder_store, {"slack": place}, taker="holder", held=lambda: holder.held, poll=1.0
        )
        assert await consumer.take_once() == 3
        await consumer.wait(10)
        assert [p["n"] for p in place.taken] == [0, 1, 2]
        assert await consumer.take_once() == 0  # finished rows are gone
    finally:
        await engine.dispose()


async def test_a_new_holder_answers_what_the_dead_one_took_and_left(engine_url: str) -> None:
    engine, (old_store, new_store) = await stores(engine_url, "old", "new")
    short = LeaseTiming(lease_seconds=1.0, takeover_seconds=1.5)
    try:
        stuck = Place("slack", ["slack:T1"])
        stuck.release.clear()  # the old holder takes the event, then dies before finishing
        old = LeaseKeeper(old_store, instance="old", timing=short, serves=stuck.leases_served)
        await old.tick()
        await old_store.hand_over("slack:T1", "slack", "Ev1", {"n": 1})
        old_consumer = HandoffConsumer(
            old_store, {"slack": stuck}, taker="old", held=lambda: old.held, poll=1.0
        )
        assert await old_consumer.take_once() == 1
        place = Place("slack", ["slack:T1"])
        cluster = Cluster(
            new_store, instance="new", timing=short, places=[place],
            heartbeat=new_store.heartbeat,
        )  # fmt: skip
        await asyncio.sleep(1.2)
        await cluster.keeper.tick()  # takes the expired lease: its queue is reopened
        assert cluster.keeper.holds("slack:T1")
        assert await cluster.consumer.take_once() == 1
        await cluster.consumer.wait(10)
        assert place.taken == [{"n": 1}]
    finally:
        stuck.release.set()
        await engine.dispose()
