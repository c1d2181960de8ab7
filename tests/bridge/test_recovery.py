"""Crash recovery in the core: which owners are dead, and what each unanswered message becomes.
In-memory ports on a virtual clock; tests/test_crash_recovery.py runs real processes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bridge.domain import ChatKey, MessageStatus, Role, StoredMessage
from bridge.ownership import Liveness
from bridge.ports import (
    LiveReply,
    MessageLimit,
    OwnerRecord,
    ReplyProgress,
    ReplySurface,
    StoreUnavailable,
)
from bridge.recovery import Recovery
from bridge.responder import Responder, ResponderSettings
from bridge.scheduler import EditScheduler
from sandbox.memory_platform import RecordingSurface
from tests.fakes import MemoryStore, ScriptedLLM, inbound
from tests.virtual_time import run_virtual

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
KEY = ChatKey("test", "W1", "C1", "T1")


class Places:
    platform = "test"

    def __init__(self) -> None:
        self.surfaces: list[RecordingSurface] = []
        self.adopted: list[tuple[tuple[str, ...], MessageLimit | None]] = []

    def surface_for(
        self,
        chat: ChatKey,
        user_message: StoredMessage,
        *,
        adopt: Sequence[str] = (),
        limit: MessageLimit | None = None,
    ) -> ReplySurface:
        surface = RecordingSurface(name=f"r{len(self.surfaces)}")
        if adopt:
            self.adopted.append((tuple(adopt), limit))
            surface.shown.update({message_id: "(as the crash left it)" for message_id in adopt})
        self.surfaces.append(surface)
        return surface


def liveness(owner: str = "me") -> Liveness:
    return Liveness(owner, "host-a", os.getpid(), owner_timeout=60.0)


class RecordingFeed:
    """A `ReplyFeed` that keeps what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def started(self, reply: LiveReply) -> None:
        self.calls.append(("started", reply.reply_id, reply.channel, reply.model))

    def shown(self, reply_id: int, text: str, *, updates: int, rate_limited: int) -> None:
        self.calls.append(("shown", reply_id, text))

    def ended(self, reply_id: int, status: MessageStatus, error: str | None) -> None:
        self.calls.append(("ended", reply_id, status, error))


def recovery_over(
    store: MemoryStore, answer: str, feed: RecordingFeed | None = None
) -> tuple[Recovery, Places, ScriptedLLM]:
    """This process ("me") recovering over `store`; the model answers `answer`."""
    store.owner = "me"
    llm = ScriptedLLM(default=answer)
    responder = Responder(
        store=store, llm=llm, scheduler=EditScheduler(interval=1.0),
        settings=ResponderSettings(model="m", titles=False),
    )  # fmt: skip
    places = Places()
    recovery = Recovery(
        store=store, responder=responder, places=[places], liveness=liveness(),
        answer_within=900.0, clock=lambda: NOW, feed=feed,
    )  # fmt: skip
    return recovery, places, llm


def test_an_owner_is_dead_when_stopped_gone_from_this_host_or_silent() -> None:
    alive = liveness()
    beat = NOW - timedelta(seconds=5)
    assert not alive.is_dead(OwnerRecord("me", "host-a", 1, beat), NOW)
    assert alive.is_dead(OwnerRecord("old", "host-a", 1, beat, stopped_at=beat), NOW)
    # Same host: its pid is gone (or is ours: a restarted container), whatever its heartbeat.
    assert alive.is_dead(OwnerRecord("old", "host-a", 2**22 + 12345, beat), NOW)
    assert alive.is_dead(OwnerRecord("old", "host-a", os.getpid(), beat), NOW)
    # Another host: only its heartbeat tells.
    assert not alive.is_dead(OwnerRecord("peer", "host-b", 1, beat), NOW)
    assert alive.is_dead(OwnerRecord("peer", "host-b", 1, NOW - timedelta(minutes=2)), NOW)


def test_each_unanswered_message_of_a_dead_owner_is_settled_once() -> None:
    async def scenario() -> None:
        store = MemoryStore()
        store.owner = "dead"
        streamed = await store.accept_inbound("test", inbound("streamed", "e1", key=KEY))
        fresh = await store.accept_inbound("test", inbound("fresh", "e2", key=KEY))
        stale = await store.accept_inbound("test", inbound("stale", "e3", key=KEY))
        assert streamed and fresh and stale
        cut = await store.add_message(
            streamed.chat_id, Role.ASSISTANT, "", status=MessageStatus.PENDING,
            reply_to_id=streamed.id, platform_message_ids=["m-1"],
        )  # fmt: skip
        await store.save_reply(
            cut.id,
            ReplyProgress(
                "Half of it", MessageStatus.STREAMING, ["m-1"], metadata={"layout": [2000, "chars"]}
            ),
        )
        store.rows[fresh.id] = replace(fresh, created_at=NOW - timedelta(minutes=1))
        store.rows[stale.id] = replace(stale, created_at=NOW - timedelta(hours=2))
        store.rows[streamed.id] = replace(streamed, created_at=NOW - timedelta(minutes=1))
        store.owner_rows["dead"] = OwnerRecord("dead", "host-a", 1, NOW, stopped_at=NOW)
        recovery, places, llm = recovery_over(store, "The answer.")
        settings = ResponderSettings()
        report = await recovery.sweep()
        await recovery.wait_answers()
        assert (report.finished, report.answered, report.told) == (1, 1, 1)
        assert places.adopted == [(("m-1",), MessageLimit(2000, "chars"))]
        _, finished, answered, told = places.surfaces
        assert finished.shown["m-1"] == f"Half of it\n\n{settings.notices.interrupted}"
        assert list(answered.shown.values()) == ["The answer."]
        assert list(told.shown.values()) == [settings.notices.ask_again]
        assert len(llm.requests) == 1  # only the message whose reply never began
        users = [m for m in store.rows.values() if m.role is Role.USER]
        assert all(u.status is MessageStatus.COMPLETE for u in users)
        assert store.rows[cut.id].status is MessageStatus.INTERRUPTED
        assert store.rows[cut.id].content == "Half of it"
        again = await recovery.sweep()  # nothing is settled twice
        assert (again.finished, again.answered, again.told) == (0, 0, 0)
        assert "dead" not in store.owner_rows  # forgotten once it holds nothing

    run_virtual(scenario())


def test_a_reply_finished_as_interrupted_is_told_to_the_live_feed() -> None:
    """The console's live page shows an interruption recovery found, as it shows the
    responder's failures: started, its text as finished on screen, ended interrupted."""

    async def scenario() -> None:
        store = MemoryStore()
        store.owner = "dead"
        streamed = await store.accept_inbound("test", inbound("streamed", "e1", key=KEY))
        assert streamed is not None
        cut = await store.add_message(
            streamed.chat_id, Role.ASSISTANT, "", status=MessageStatus.PENDING,
            reply_to_id=streamed.id, platform_message_ids=["m-1"],
        )  # fmt: skip
        progress = ReplyProgress("Half of it", MessageStatus.STREAMING, ["m-1"], model="gpt-x")
        await store.save_reply(cut.id, progress)
        store.owner_rows["dead"] = OwnerRecord("dead", "host-a", 1, NOW, stopped_at=NOW)
        feed = RecordingFeed()
        recovery, _, _ = recovery_over(store, "unused", feed)
        report = await recovery.sweep()
        assert report.finished == 1
        error = store.rows[cut.id].error
        assert error is not None and error.startswith("interrupted")
        assert feed.calls == [
            ("started", streamed.id, "C1 / T1", "gpt-x"),
            ("shown", streamed.id, "Half of it"),
            ("ended", streamed.id, MessageStatus.INTERRUPTED, error),
        ]

    run_virtual(scenario())


def test_a_message_this_process_holds_but_no_task_answers_is_answered() -> None:
    async def scenario() -> None:
        store = MemoryStore()
        store.owner = "me"
        lost = await store.accept_inbound("test", inbound("lost", "e1", key=KEY))
        working = await store.accept_inbound("test", inbound("working", "e2", key=KEY))
        assert lost and working
        store.rows[lost.id] = replace(lost, created_at=NOW - timedelta(minutes=5))
        store.rows[working.id] = replace(working, created_at=NOW - timedelta(minutes=5))
        recovery, places, _ = recovery_over(store, "Late, but here.")
        recovery._responder.in_flight.add(working.id)  # a task of ours is on it
        report = await recovery.sweep()
        await recovery.wait_answers()
        assert report.answered == 1
        assert [list(s.shown.values()) for s in places.surfaces] == [["Late, but here."]]
        assert store.rows[working.id].status is MessageStatus.PENDING  # left to its task

    run_virtual(scenario())


def test_a_reply_that_showed_only_its_placeholder_is_answered_in_it() -> None:
    async def scenario() -> None:
        store = MemoryStore()
        store.owner = "dead"
        asked = await store.accept_inbound("test", inbound("asked", "e1", key=KEY))
        assert asked
        store.rows[asked.id] = replace(asked, created_at=NOW - timedelta(seconds=30))
        placeholder = await store.add_message(
            asked.chat_id, Role.ASSISTANT, "", status=MessageStatus.PENDING,
            reply_to_id=asked.id, platform_message_ids=["m-7"],
        )  # fmt: skip
        store.owner_rows["dead"] = OwnerRecord("dead", "host-a", 1, NOW, stopped_at=NOW)
        recovery, places, _ = recovery_over(store, "The whole answer.")
        report = await recovery.sweep()
        await recovery.wait_answers()
        assert report.answered == 1 and report.finished == 0
        resumed = places.surfaces[-1]
        assert resumed.shown == {"m-7": "The whole answer."} and resumed.posts == 0
        assert store.rows[placeholder.id].status is MessageStatus.COMPLETE
        assert store.rows[placeholder.id].content == "The whole answer."
        assert store.rows[asked.id].status is MessageStatus.COMPLETE
        assert len(store.replies()) == 1  # no second reply row

    run_virtual(scenario())


def test_a_reply_that_ended_but_whose_message_was_not_closed_is_left_as_shown() -> None:
    async def scenario() -> None:
        store = MemoryStore()
        store.owner = "dead"
        asked = await store.accept_inbound("test", inbound("asked", "e1", key=KEY))
        assert asked
        done = await store.add_message(
            asked.chat_id, Role.ASSISTANT, "", status=MessageStatus.PENDING,
            reply_to_id=asked.id, platform_message_ids=["m-9"],
        )  # fmt: skip
        await store.save_reply(done.id, ReplyProgress("All of it.", MessageStatus.COMPLETE))
        store.owner_rows["dead"] = OwnerRecord("dead", "host-a", 1, NOW, stopped_at=NOW)
        recovery, places, llm = recovery_over(store, "never asked")
        report = await recovery.sweep()
        assert (report.finished, report.answered, report.told) == (0, 0, 0)
        assert places.adopted == [] and all(not s.writes for s in places.surfaces)
        assert store.rows[asked.id].status is MessageStatus.COMPLETE
        assert store.rows[done.id].status is MessageStatus.COMPLETE and not llm.requests

    run_virtual(scenario())


def test_a_database_outage_mid_sweep_leaves_the_message_for_the_next_sweep() -> None:
    """The database goes away while a dead owner's reply is being finished: the sweep stops
    (and is tried again soon) instead of closing the message as one that cannot be settled."""

    async def scenario() -> None:
        store = MemoryStore()
        store.owner = "dead"
        asked = await store.accept_inbound("test", inbound("hello", "e1", key=KEY))
        assert asked is not None
        cut = await store.add_message(
            asked.chat_id, Role.ASSISTANT, "", status=MessageStatus.PENDING,
            reply_to_id=asked.id, platform_message_ids=["m-1"],
        )  # fmt: skip
        await store.save_reply(cut.id, ReplyProgress("Half", MessageStatus.STREAMING, ["m-1"]))
        store.owner_rows["dead"] = OwnerRecord("dead", "host-a", 1, NOW, stopped_at=NOW)
        feed = RecordingFeed()
        recovery, places, _ = recovery_over(store, "unused", feed)
        real_save = store.save_reply

        async def outage(*args: object, **kwargs: object) -> None:
            raise StoreUnavailable("connection refused")

        store.save_reply = outage  # type: ignore[method-assign]
        with pytest.raises(StoreUnavailable):
            await recovery.sweep()
        assert store.rows[asked.id].status is not MessageStatus.COMPLETE  # not closed
        assert feed.calls == []  # the live page was told nothing it would never see end
        store.save_reply = real_save  # type: ignore[method-assign]
        report = await recovery.sweep()  # the database is back
        assert report.finished == 1
        assert store.rows[cut.id].status is MessageStatus.INTERRUPTED
        assert [call[0] for call in feed.calls] == ["started", "shown", "ended"]

    run_virtual(scenario())
