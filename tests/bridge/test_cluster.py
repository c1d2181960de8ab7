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
from bridge.ports import StoreUnavailable
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

        self.failures: list[Exception] = []
        self.handled: list[int] = []

    def leases_served(self) -> list[str]:
        return list(self.leases)

    async def take_handoff(self, payload: Mapping[str, Any]) -> None:
        self.taken.append(payload)
        await self.release.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.handled.append(payload.get("n", -1))


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
        await b.tick()  # released by a planned stop: taken at once
        assert b.holds("slack:T1") and b.holds(MAINTENANCE)
        assert b.taken_from == set()  # a stopped; it did not die
    finally:
        await engine.dispose()


async def test_a_lease_left_to_expire_is_taken_over_and_its_holder_counts_as_dead(
    engine_url: str,
) -> None:
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
        assert "slack:T1" in gained and "run-a" in b.taken_from
        await a.tick()  # a comes back: its renewal fails, it does not answer for T1 again
        assert not a.holds("slack:T1")
    finally:
        await engine.dispose()


class Flaky:
    """A store whose calls fail while `down` (the database unreachable from this instance)."""

    def __init__(self, store: SqlChatStore) -> None:
        self.store = store
        self.down = False

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.store, name)

        async def maybe(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise StoreUnavailable("connection refused")
            return await call(*args, **kwargs)

        return maybe


async def test_after_a_database_outage_the_holder_renews_before_anyone_takes_its_lease(
    engine_url: str,
) -> None:
    engine, (a_store, b_store) = await stores(engine_url, "run-a", "run-b")
    short = LeaseTiming(lease_seconds=1.0, takeover_seconds=1.5)
    try:
        a_db, b_db = Flaky(a_store), Flaky(b_store)
        a = LeaseKeeper(a_db, instance="a", timing=short, serves=lambda: ["slack:T1"])
        b = LeaseKeeper(b_db, instance="b", timing=short, serves=lambda: ["slack:T1"])
        await a.tick()
        await asyncio.sleep(1.0)
        a_db.down = b_db.down = True  # the database goes away for both, longer than a term
        await a.tick()
        await b.tick()
        await asyncio.sleep(1.2)
        a_db.down = b_db.down = False
        await b.tick()  # b is back first: the lease has expired, but b waits a term
        assert not b.holds("slack:T1")
        await a.tick()  # a is back too and renews what it held
        assert a.holds("slack:T1")
        for _ in range(4):  # a term later, a renewing all along: b still takes nothing
            await asyncio.sleep(0.3)
            await a.tick()
        await b.tick()
        assert not b.holds("slack:T1") and b.taken_from == set()
    finally:
        await engine.dispose()


async def test_a_holder_known_dead_is_taken_over_at_once(engine_url: str) -> None:
    engine, (a_store, b_store) = await stores(engine_url, "run-a", "run-b")
    short = LeaseTiming(lease_seconds=0.5, takeover_seconds=1.0)
    try:
        a = LeaseKeeper(a_store, instance="a", timing=short, serves=lambda: ["slack:T1"])
        await a.tick()
        await asyncio.sleep(0.6)  # a's lease expires (it was killed)

        async def dead(run: str) -> bool:
            return run == "run-a"

        b = LeaseKeeper(
            b_store, instance="b", timing=short, serves=lambda: ["slack:T1"], known_dead=dead
        )
        await b.tick()  # b just started: no term of its own yet, but a is known dead
        assert b.holds("slack:T1")
    finally:
        await engine.dispose()


async def test_an_instance_takes_only_the_leases_it_serves(engine_url: str) -> None:
    engine, (a_store, b_store) = await stores(engine_url, "run-a", "run-b")
    try:
        a = keeper(a_store, "a", [shard_lease(0), shard_lease(1)])
        b = keeper(b_store, "b", [shard_lease(2), shard_lease(3)])
        await a.tick()
        await b.tick()
        assert set(a.held) - {MAINTENANCE} == {shard_lease(0), shard_lease(1)}
        assert set(b.held) - {MAINTENANCE} == {shard_lease(2), shard_lease(3)}
        assert Router(b, b_store, discord_shards=4).may_settle("discord", str(0 << 22)) is False
    finally:
        await engine.dispose()


def consumer_of(store: SqlChatStore, keeper: LeaseKeeper, place: Place) -> HandoffConsumer:
    return HandoffConsumer(store, {"slack": place}, held=lambda: keeper.held, poll=1.0)


async def test_queued_events_are_answered_by_the_holder_one_chat_at_a_time(
    engine_url: str,
) -> None:
    engine, (holder_store, receiver_store) = await stores(engine_url, "holder", "receiver")
    try:
        place = Place("slack", ["slack:T1"])
        holder = keeper(holder_store, "holder", ["slack:T1"])
        await holder.tick()
        receiver = keeper(receiver_store, "receiver", ["slack:T1"])
        await receiver.tick()
        router = Router(receiver, receiver_store)
        assert not await router.answers_here("slack", "T1")
        for n, chat in enumerate(["chat-1", "chat-1", "chat-2"]):
            await router.hand_over("slack", "T1", f"Ev{n}", chat, lambda n=n: {"n": n}, {})
        await router.hand_over("slack", "T1", "Ev0", "chat-1", lambda: {"n": 0}, {})  # a retry
        nobody = consumer_of(receiver_store, receiver, Place("slack", []))
        assert await nobody.take_once() == 0  # the receiver does not hold T1: it takes nothing

        place.release.clear()  # every handling waits until released
        consumer = consumer_of(holder_store, holder, place)
        assert await consumer.take_once() == 3
        await asyncio.sleep(0.2)
        # chat-1's second event waits for its first; chat-2's runs beside it.
        assert sorted(p["n"] for p in place.taken) == [0, 2]
        place.release.set()
        await consumer.wait(10)
        await consumer.wait(10)
        assert [p["n"] for p in place.taken if p["n"] != 2] == [0, 1]
        assert await consumer.take_once() == 0  # finished rows are gone
    finally:
        await engine.dispose()


async def test_an_event_that_fails_for_a_passing_reason_is_queued_again(engine_url: str) -> None:
    engine, (store,) = await stores(engine_url, "holder")
    try:
        place = Place("slack", ["slack:T1"])
        place.failures = [StoreUnavailable("database away"), ValueError("not readable")]
        holder = keeper(store, "holder", ["slack:T1"])
        await holder.tick()
        await store.hand_over("slack:T1", "slack", "Ev1", "c", {"n": 1})
        await store.hand_over("slack:T1", "slack", "Ev2", "d", {"n": 2})
        consumer = consumer_of(store, holder, place)
        assert await consumer.take_once() == 2
        await consumer.wait(10)
        # Ev1 failed to reach the database: back in the queue, taken again, answered.
        # Ev2's payload could not be read: dropped (logged), never retried.
        assert await consumer.take_once() == 1
        await consumer.wait(10)
        assert [p["n"] for p in place.taken] == [1, 2, 1]
        assert place.handled == [1]
        assert await consumer.take_once() == 0
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
        await old_store.hand_over("slack:T1", "slack", "Ev1", "c", {"n": 1})
        old_consumer = consumer_of(old_store, old, stuck)
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


async def test_a_handoff_waits_out_a_short_outage_and_gives_up_after_the_tolerance(
    engine_url: str,
) -> None:
    engine, (store,) = await stores(engine_url, "receiver")
    try:
        flaky = Flaky(store)
        nobody = keeper(store, "receiver", [])
        router = Router(nobody, flaky, outage_tolerance=5.0)
        flaky.down = True
        handing = asyncio.create_task(
            router.hand_over("slack", "T1", "Ev1", "c", lambda: {"n": 1}, {})
        )
        await asyncio.sleep(0.6)
        flaky.down = False  # back within the tolerance: queued, nothing lost
        await handing
        assert [h.event_id for h in await store.take_handoffs(["slack:T1"], 10)] == ["Ev1"]
        flaky.down = True
        impatient = Router(nobody, flaky, outage_tolerance=0.3)
        with pytest.raises(StoreUnavailable):  # the intake then tells the user
            await impatient.hand_over("slack", "T1", "Ev2", "c", lambda: {"n": 2}, {})
    finally:
        await engine.dispose()
