"""A reply's tool rounds in the store on SQLite and PostgreSQL: stored in one go, sent back as
context between the question and its answer, and never taken for a reply (recovery, the
platform ids of a reply), gone with their question (deleted, reset, retention)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Connection

import storage.conversation
from bridge.domain import ChatKey, InboundMessage, MessageStatus, Role, StoredMessage
from bridge.ports import ReplyProgress, ToolCall, ToolOutcome
from storage import SqlChatStore, create_engine, migrate
from storage.migrate import alembic_config, current_revision, modelled
from storage.models import Base
from storage.store import MESSAGES

KEY = ChatKey("slack", "T1", "C1", "1700000000.000100")


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlChatStore]:
    await migrate(database_url)
    engine = create_engine(database_url)
    yield SqlChatStore(engine)
    await engine.dispose()


async def ask(store: SqlChatStore, text: str, message_id: str) -> StoredMessage:
    inbound = InboundMessage(f"Ev{message_id}", KEY, "U1", text, message_id)
    stored = await store.accept_inbound(KEY.platform, inbound)
    assert stored is not None
    return stored


async def placeholder(store: SqlChatStore, question: StoredMessage, ts: str) -> StoredMessage:
    """The reply's row, made when its placeholder is posted (before any tool round)."""
    return await store.add_message(
        question.chat_id,
        Role.ASSISTANT,
        "",
        status=MessageStatus.PENDING,
        reply_to_id=question.id,
        platform_message_ids=[ts],
    )


async def finish(
    store: SqlChatStore, question: StoredMessage, reply: StoredMessage, text: str
) -> None:
    await store.save_reply(reply.id, ReplyProgress(text, MessageStatus.COMPLETE, model="m"))
    await store.mark_answered(question.id)


def outcome(
    call_id: str, result: str, *, name: str = "docs.search", error: bool = False
) -> ToolOutcome:
    call = ToolCall(call_id, name, f'{{"q": "{call_id}"}}')
    return ToolOutcome(call, result, error=error, seconds=0.25)


async def tool_round(store: SqlChatStore, question: StoredMessage, *calls: tuple[str, str]) -> None:
    outcomes = [outcome(call_id, result) for call_id, result in calls]
    await store.add_tool_round(question.chat_id, question.id, outcomes, model="m")


def shown(messages: list[StoredMessage]) -> list[tuple[str, str]]:
    """Each message as (role, content); a round's calls as ("calls", their ids)."""
    out = []
    for m in messages:
        if m.role is Role.ASSISTANT and "tool_calls" in m.metadata:
            out.append(("calls", ",".join(c["id"] for c in m.metadata["tool_calls"])))
        else:
            out.append((m.role.value, m.content))
    return out


async def test_a_round_is_stored_as_the_calls_then_one_result_per_call(
    store: SqlChatStore,
) -> None:
    question = await ask(store, "what does the doc say?", "1.1")
    reply = await placeholder(store, question, "1.2")
    outcomes = [
        outcome("call_1", "the doc\x00 says yes"),
        outcome("call_2", "Error: timed out after 10 s", name="web.fetch", error=True),
    ]
    writes = store.writes
    await store.add_tool_round(question.chat_id, question.id, outcomes, model="gpt-x")
    assert store.writes - writes == 3
    calls, first, second = (await store.messages(question.chat_id))[2:]
    assert reply.id < calls.id < first.id < second.id
    assert (calls.role, calls.content, calls.reply_to_id) == (Role.ASSISTANT, "", question.id)
    assert calls.metadata == {
        "tool_calls": [
            {"id": "call_1", "name": "docs.search", "arguments": '{"q": "call_1"}'},
            {"id": "call_2", "name": "web.fetch", "arguments": '{"q": "call_2"}'},
        ]
    }
    assert (first.role, first.content) == (Role.TOOL, "the doc says yes")  # cleaned, as all text
    assert first.metadata == {
        "tool_call_id": "call_1",
        "name": "docs.search",
        "error": False,
        "seconds": 0.25,
    }
    assert second.metadata["error"] is True and second.metadata["name"] == "web.fetch"
    for row in (calls, first, second):
        assert row.status is MessageStatus.COMPLETE and row.model == "gpt-x"
        assert row.response_number == 0 and row.reply_to_id == question.id
        assert row.platform_message_ids == () and row.created_at == calls.created_at
    # Text PostgreSQL refuses (NUL, in its JSON a \u0000 that jsonb cannot read) is cleaned in
    # the calls too, or the chat's context could not be read any more.
    odd = ToolCall("call_3\x00", "docs.search", '{"q": "a\x00b\ud800"}')
    await store.add_tool_round(question.chat_id, question.id, [ToolOutcome(odd, "r")], model="m")
    chat = await store.get_or_create_chat(KEY)
    context = await store.context_messages(chat, upto_id=question.id, limit=50)
    assert context[-2].metadata["tool_calls"] == [
        {"id": "call_3", "name": "docs.search", "arguments": '{"q": "ab\ufffd"}'}
    ]
    assert context[-1].metadata["tool_call_id"] == "call_3"
    # A round without calls stores nothing.
    await store.add_tool_round(question.chat_id, question.id, [], model="gpt-x")
    assert len(await store.messages(question.chat_id)) == 7


async def test_context_sends_each_question_then_its_rounds_then_its_answer(
    store: SqlChatStore,
) -> None:
    chat = await store.get_or_create_chat(KEY)
    first = await ask(store, "first question", "1.1")
    first_reply = await placeholder(store, first, "1.2")
    second = await ask(store, "second question", "1.3")  # queued behind the first reply
    await tool_round(store, first, ("a1", "result a1"))
    await tool_round(store, first, ("b1", "result b1"), ("b2", "result b2"))
    await finish(store, first, first_reply, "first answer")

    second_reply = await placeholder(store, second, "1.4")
    # What the second reply starts from: the first exchange with its rounds, then the question.
    assert shown(await store.context_messages(chat, upto_id=second.id, limit=50)) == [
        ("user", "first question"),
        ("calls", "a1"),
        ("tool", "result a1"),
        ("calls", "b1,b2"),
        ("tool", "result b1"),
        ("tool", "result b2"),
        ("assistant", "first answer"),
        ("user", "second question"),
    ]
    await tool_round(store, second, ("c1", "result c1"), ("c2", "result c2"))
    # A reply that has not ended yet is left out, its rounds are not (recovery starts from them).
    context = await store.context_messages(chat, upto_id=second.id, limit=50)
    assert shown(context)[-4:] == [
        ("user", "second question"),
        ("calls", "c1,c2"),
        ("tool", "result c1"),
        ("tool", "result c2"),
    ]
    third = await ask(store, "third question", "1.5")  # queued behind the second reply
    await tool_round(store, second, ("d1", "result d1"))
    await finish(store, second, second_reply, "second answer")

    context = await store.context_messages(chat, upto_id=third.id, limit=50)
    assert shown(context) == [
        ("user", "first question"),
        ("calls", "a1"),
        ("tool", "result a1"),
        ("calls", "b1,b2"),
        ("tool", "result b1"),
        ("tool", "result b2"),
        ("assistant", "first answer"),
        ("user", "second question"),
        ("calls", "c1,c2"),
        ("tool", "result c1"),
        ("tool", "result c2"),
        ("calls", "d1"),
        ("tool", "result d1"),
        ("assistant", "second answer"),
        ("user", "third question"),
    ]
    assert second_reply.id < third.id < context[-4].id  # stored in another order than sent
    # The limit keeps the newest rows (the prompt builder drops a round cut in half).
    newest = await store.context_messages(chat, upto_id=third.id, limit=4)
    assert shown(newest) == [
        ("calls", "d1"),
        ("tool", "result d1"),
        ("assistant", "second answer"),
        ("user", "third question"),
    ]
    # A later message's rounds are not context for an earlier one.
    early = await store.context_messages(chat, upto_id=first.id, limit=50)
    assert shown(early)[-1] == ("assistant", "first answer") and len(early) == 7


async def test_a_rounds_order_is_its_steps_not_the_ids_its_rows_got(store: SqlChatStore) -> None:
    """The ids of one multi-row INSERT need not follow its rows (nor two transactions' ids the
    order they committed in): the store orders a reply's rounds by their steps."""
    chat = await store.get_or_create_chat(KEY)
    question = await ask(store, "q", "1.1")
    await tool_round(store, question, ("a1", "r1"))
    await tool_round(store, question, ("b1", "r2"))
    first_calls = (await store.messages(chat.id))[1]
    async with store._begin() as conn:  # the first round's calls get the newest id
        await conn.execute(
            MESSAGES.update().where(MESSAGES.c.id == first_calls.id).values(id=10**6)
        )
    context = await store.context_messages(chat, upto_id=question.id, limit=50)
    assert shown(context) == [
        ("user", "q"),
        ("calls", "a1"),
        ("tool", "r1"),
        ("calls", "b1"),
        ("tool", "r2"),
    ]


async def test_recovery_never_takes_a_tool_row_for_a_reply(database_url: str) -> None:
    await migrate(database_url)
    engine = create_engine(database_url)
    dead, alive = SqlChatStore(engine, owner="dead-1"), SqlChatStore(engine, owner="alive-2")
    try:
        await dead.register_owner("host-a", 1)
        await dead.release_owner()
        question = await ask(dead, "look it up", "1.1")
        reply = await placeholder(dead, question, "1.2")
        await tool_round(dead, question, ("a1", "found it"), ("a2", "and this"))
        # Died after the round, before any text: only the placeholder is on screen.
        orphans = await alive.orphans(["dead-1"], limit=10)
        assert [o.user_message.id for o in orphans] == [question.id]
        assert [r.id for r in orphans[0].replies] == [reply.id]
        assert orphans[0].replies[0].status is MessageStatus.PENDING

        # Died after writing text: still the one reply, not finished (the rounds are).
        await dead.save_reply(reply.id, ReplyProgress("Half", MessageStatus.STREAMING, ["1.2"]))
        await dead.close()
        (orphan,) = await alive.orphans(["dead-1"], limit=10)
        assert [(r.id, r.content) for r in orphan.replies] == [(reply.id, "Half")]
        ids = [question.id, *(r.id for r in orphan.replies)]
        assert await alive.take_over(ids, "dead-1") == set(ids)
        # Its finished tool rows hold nobody's inbox: the dead owner can be forgotten.
        assert await alive.forget_owner("dead-1") is True
    finally:
        await engine.dispose()


async def test_a_reply_is_found_by_its_continuations_past_any_tool_rounds(
    store: SqlChatStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage.conversation, "CONTINUATIONS_SEARCHED", 1)
    question = await ask(store, "a long answer", "1.1")
    reply = await placeholder(store, question, "1.2")
    await store.save_reply(
        reply.id, ReplyProgress("part one, part two", MessageStatus.COMPLETE, ["1.2", "1.3"])
    )
    await store.mark_answered(question.id)
    later = await ask(store, "next", "1.4")
    await tool_round(store, later, ("a1", "x"))
    await tool_round(store, later, ("b1", "y"))
    # The newest reply searched is the answer, not the newer rows of a round.
    found = await store.find_message(KEY, "1.3")
    assert found is not None and found.id == reply.id


async def test_a_deleted_question_takes_its_rounds_out_of_the_context(
    store: SqlChatStore,
) -> None:
    chat = await store.get_or_create_chat(KEY)
    kept = await ask(store, "kept", "1.1")
    await tool_round(store, kept, ("k1", "kept result"))
    await finish(store, kept, await placeholder(store, kept, "1.2"), "kept answer")
    gone = await ask(store, "gone", "1.3")
    gone_reply = await placeholder(store, gone, "1.4")
    await tool_round(store, gone, ("g1", "gone result"))
    await finish(store, gone, gone_reply, "gone answer")
    later = await ask(store, "later", "1.5")

    await store.edit_message(gone.id, gone.content, deleted=True)
    context = await store.context_messages(chat, upto_id=later.id, limit=50)
    assert ("calls", "g1") not in shown(context) and ("tool", "gone result") not in shown(context)
    assert shown(context)[:4] == [
        ("user", "kept"),
        ("calls", "k1"),
        ("tool", "kept result"),
        ("assistant", "kept answer"),
    ]
    assert shown(context)[-1] == ("user", "later")


async def test_a_reset_leaves_rounds_stored_after_it_below_the_floor(
    store: SqlChatStore,
) -> None:
    old = await ask(store, "before the reset", "1.1")
    reply = await placeholder(store, old, "1.2")
    await tool_round(store, old, ("a1", "old result"))
    await store.reset_context(old.chat_id)
    # The reply was still running: its next round and its answer come after the reset.
    await tool_round(store, old, ("b1", "late result"))
    await finish(store, old, reply, "old answer")
    fresh = await ask(store, "after the reset", "1.3")
    chat = await store.get_chat(KEY)
    assert chat is not None
    context = await store.context_messages(chat, upto_id=fresh.id, limit=50)
    assert shown(context) == [("user", "after the reset")]
    assert len(await store.messages(chat.id)) == 7  # nothing deleted


async def test_retention_takes_the_rounds_with_their_messages(store: SqlChatStore) -> None:
    question = await ask(store, "q", "1.1")
    reply = await placeholder(store, question, "1.2")
    await tool_round(store, question, ("a1", "r1"), ("a2", "r2"))
    await tool_round(store, question, ("b1", "r3"))
    await finish(store, question, reply, "a")
    await store.record_vote(reply.id, "U1", "up")
    assert await store.prune_messages(older_than_seconds=-1) == 7
    assert await store.get_chat(KEY) is None
    async with store._read() as conn:
        assert (await conn.execute(select(MESSAGES.c.id))).first() is None


async def test_migration_0006_upgrades_a_database_at_0005(database_url: str) -> None:
    await migrate(database_url, "0005")
    engine = create_engine(database_url)
    try:
        old = SqlChatStore(engine)  # today's store on the old schema: it writes no tool_step
        question = await ask(old, "asked before", "1.1")
        reply = await placeholder(old, question, "1.2")
        await finish(old, question, reply, "answered before")
        await old.close()
    finally:
        await engine.dispose()

    await migrate(database_url)
    assert await current_revision(database_url) == "0011"
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            steps = (await conn.execute(text("SELECT tool_step FROM messages"))).scalars()
            assert list(steps) == [0, 0]
            diff = await conn.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"include_name": modelled}), Base.metadata
                )
            )
        assert diff == []
        store = SqlChatStore(engine)
        later = await ask(store, "asked after", "1.3")
        await tool_round(store, later, ("a1", "r1"))
        chat = await store.get_chat(KEY)
        assert chat is not None
        assert shown(await store.context_messages(chat, later.id, 50)) == [
            ("user", "asked before"),
            ("assistant", "answered before"),
            ("user", "asked after"),
            ("calls", "a1"),
            ("tool", "r1"),
        ]
        (orphan,) = await store.orphans([store.owner], 10)
        assert orphan.replies == ()

        # Down again: the tool rows go with the column (they would read as replies without it).
        def downgrade(sync: Connection) -> None:
            config = alembic_config()
            config.attributes["connection"] = sync
            command.downgrade(config, "0005")

        async with engine.begin() as conn:
            await conn.run_sync(downgrade)
            columns = await conn.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("messages")}
            )
            assert "tool_step" not in columns
            roles = (await conn.execute(text("SELECT role FROM messages"))).scalars()
            assert sorted(roles) == ["assistant", "user", "user"]
    finally:
        await engine.dispose()
