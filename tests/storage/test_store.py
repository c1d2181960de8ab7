"""The SQL store on SQLite and PostgreSQL: schema from migrations, round trips, constraints."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, inspect
from sqlalchemy.exc import IntegrityError

from bridge.domain import ChatKey, HistoryEntry, InboundMessage, MessageStatus, Role, TokenUsage
from bridge.ports import ReplyProgress
from storage import SqlChatStore, create_engine, migrate
from storage.browse import SEARCH_INDEX
from storage.migrate import current_revision, modelled
from storage.models import Base, ChatRow, utcnow

KEY = ChatKey("slack", "T1", "C1", "1700000000.000100")


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlChatStore]:
    await migrate(database_url)
    engine = create_engine(database_url)
    yield SqlChatStore(engine)
    await engine.dispose()


def inbound(event_id: str, text: str, message_id: str, key: ChatKey = KEY) -> InboundMessage:
    return InboundMessage(
        event_id=event_id, chat_key=key, author_id="U1", text=text, platform_message_id=message_id
    )


async def test_migrations_create_the_schema_the_models_describe(database_url: str) -> None:
    await migrate(database_url)
    assert await current_revision(database_url) == "0011"
    await migrate(database_url)  # a second run is a no-op, not an error
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            indexes = await conn.run_sync(
                lambda c: {index["name"] for index in inspect(c).get_indexes("messages")}
            )
            diff = await conn.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"include_name": modelled}),
                    Base.metadata,
                )
            )
    finally:
        await engine.dispose()
    assert {"chats", "messages", "processed_events", "alembic_version"} <= tables
    # The text search's index is the migration's alone (an FTS5 table, a pg_trgm index).
    assert SEARCH_INDEX[engine.dialect.name] in tables | indexes
    assert diff == []


async def test_chat_round_trip_with_messages_in_conversation_order(store: SqlChatStore) -> None:
    chat = await store.get_or_create_chat(KEY)
    assert (await store.get_or_create_chat(KEY)).id == chat.id
    first = await store.accept_inbound("slack", inbound("Ev1", "hello", "1.1"))
    second = await store.accept_inbound("slack", inbound("Ev2", "and another", "1.2"))
    assert first is not None and second is not None
    # The reply to the first message finishes after the second message was stored.
    reply = await store.add_message(
        chat.id, Role.ASSISTANT, "", status=MessageStatus.STREAMING, reply_to_id=first.id
    )
    await store.save_reply(
        reply.id,
        ReplyProgress(
            content="hi there",
            status=MessageStatus.COMPLETE,
            platform_message_ids=["1.3"],
            model="m",
            usage=TokenUsage(10, 3),
            metadata={"ttft_ms": 12},
        ),
    )
    context = await store.context_messages(chat, upto_id=second.id, limit=50)
    assert [(m.role, m.content) for m in context] == [
        (Role.USER, "hello"),
        (Role.ASSISTANT, "hi there"),
        (Role.USER, "and another"),
    ]
    saved = context[1]
    assert saved.usage == TokenUsage(10, 3)
    assert saved.metadata == {"ttft_ms": 12}
    assert saved.platform_message_ids == ("1.3",)
    assert saved.status is MessageStatus.COMPLETE
    # Context for the first message does not include what came after it.
    early = await store.context_messages(chat, upto_id=first.id, limit=50)
    assert [m.content for m in early] == ["hello", "hi there"]
    # The limit keeps the newest.
    newest = await store.context_messages(chat, upto_id=second.id, limit=2)
    assert [m.content for m in newest] == ["hi there", "and another"]


async def test_an_event_is_accepted_once(store: SqlChatStore) -> None:
    assert await store.accept_inbound("slack", inbound("Ev1", "hello", "1.1")) is not None
    assert await store.accept_inbound("slack", inbound("Ev1", "hello", "1.1")) is None
    # The same message under a second event id (Slack's app_mention + message) is stored once.
    assert await store.accept_inbound("slack", inbound("Ev2", "hello", "1.1")) is None
    chat = await store.get_or_create_chat(KEY)
    assert [m.content for m in await store.messages(chat.id)] == ["hello"]
    assert await store.claim_event("discord", "Ev1") is True
    assert await store.claim_event("discord", "Ev1") is False


async def test_messages_arriving_together_are_stored_in_one_batch_with_the_same_rules(
    store: SqlChatStore,
) -> None:
    """A burst of inbound messages commits together; duplicates within the burst are still
    answered once, and each chat keeps its messages in arrival order."""
    import asyncio

    other = ChatKey("slack", "T1", "C2", "")
    await store.accept_inbound("slack", inbound("Ev0", "earlier", "0.1"))  # KEY exists already
    batches_before = store._inbound.batches
    burst = [
        inbound("Ev1", "first", "1.1"),
        inbound("Ev2", "in another chat", "2.1", other),
        inbound("Ev1", "first, redelivered", "1.1"),  # the same event twice in one batch
        inbound("Ev3", "first, as app_mention", "1.1"),  # the same message, another event id
        inbound("Ev4", "second", "1.2"),
        InboundMessage("Ev5", other, "U2", "named", "2.2", author_name="Ada"),
    ]
    results = await asyncio.gather(*(store.accept_inbound("slack", m) for m in burst))
    assert store._inbound.batches - batches_before == 1
    assert [r.content if r else None for r in results] == [
        "first",
        "in another chat",
        None,
        None,
        "second",
        "named",
    ]
    first, in_other, _, _, second, named = results
    assert first is not None and second is not None and in_other is not None and named is not None
    assert first.chat_id == second.chat_id != in_other.chat_id == named.chat_id
    assert first.id < second.id and named.metadata == {"author_name": "Ada"}
    assert first.platform_message_ids == ("1.1",) and first.status is MessageStatus.PENDING
    chat = await store.get_chat(KEY)
    assert chat is not None
    stored = await store.messages(chat.id)
    assert [m.content for m in stored] == ["earlier", "first", "second"]
    assert stored[1] == first
    assert await store.claim_event("slack", "Ev3") is False  # the claim stands


async def test_unique_chat_location_is_enforced(store: SqlChatStore) -> None:
    await store.get_or_create_chat(KEY)
    row = {
        "platform": KEY.platform,
        "workspace": KEY.workspace,
        "channel": KEY.channel,
        "thread": KEY.thread,
        "settings": {},
        "context_floor": 0,
        "created_at": utcnow(),
        "updated_at": utcnow(),
    }
    with pytest.raises(IntegrityError):
        async with store._engine.begin() as conn:
            await conn.execute(insert(ChatRow).values(**row))


async def test_history_import_is_idempotent_and_reset_hides_old_context(
    store: SqlChatStore,
) -> None:
    chat = await store.get_or_create_chat(KEY)
    entries = [
        HistoryEntry(Role.USER, "earlier question", "U2", "0.1"),
        HistoryEntry(Role.ASSISTANT, "earlier answer", None, "0.2"),
    ]
    assert await store.import_history(chat, entries) == 2
    assert await store.import_history(chat, entries) == 0
    message = await store.accept_inbound("slack", inbound("Ev1", "now", "1.1"))
    assert message is not None
    context = await store.context_messages(chat, upto_id=message.id, limit=10)
    assert [m.content for m in context] == ["earlier question", "earlier answer", "now"]

    await store.reset_context(chat.id)
    chat = await store.get_or_create_chat(KEY)
    later = await store.accept_inbound("slack", inbound("Ev2", "fresh start", "1.2"))
    assert later is not None
    assert [m.content for m in await store.context_messages(chat, later.id, 10)] == ["fresh start"]
    assert len(await store.messages(chat.id)) == 4  # nothing deleted


async def test_unanswered_messages_of_a_dead_owner_are_found_and_taken_over_once(
    database_url: str,
) -> None:
    await migrate(database_url)
    engine = create_engine(database_url)
    dead, alive = SqlChatStore(engine, owner="dead-1"), SqlChatStore(engine, owner="alive-2")
    try:
        await dead.register_owner("host-a", 111)
        await alive.register_owner("host-b", 222)
        await dead.release_owner()
        answered = await dead.accept_inbound("slack", inbound("Ev1", "answered", "1.1"))
        streaming = await dead.accept_inbound("slack", inbound("Ev2", "streaming", "1.2"))
        queued = await dead.accept_inbound("slack", inbound("Ev3", "queued", "1.3"))
        assert answered and streaming and queued
        assert queued.status is MessageStatus.PENDING  # an inbox entry until answered
        done = await dead.add_message(
            answered.chat_id, Role.ASSISTANT, "", status=MessageStatus.PENDING,
            reply_to_id=answered.id, platform_message_ids=["9.1"],
        )  # fmt: skip
        await dead.save_reply(done.id, ReplyProgress("all of it", MessageStatus.COMPLETE))
        await dead.mark_answered(answered.id)
        part = await dead.add_message(
            streaming.chat_id, Role.ASSISTANT, "", status=MessageStatus.PENDING,
            reply_to_id=streaming.id, platform_message_ids=["9.2"],
        )  # fmt: skip
        await dead.save_reply(part.id, ReplyProgress("half", MessageStatus.STREAMING, ["9.2"]))

        owners = {o.id: o for o in await alive.owners()}
        assert owners["dead-1"].stopped_at is not None and owners["alive-2"].stopped_at is None
        assert (owners["dead-1"].host, owners["dead-1"].pid) == ("host-a", 111)
        orphans = await alive.orphans(["dead-1"], limit=10)
        assert [o.user_message.content for o in orphans] == ["streaming", "queued"]
        assert orphans[0].chat == KEY and orphans[0].owner == "dead-1"
        assert [(r.content, r.status) for r in orphans[0].replies] == [
            ("half", MessageStatus.STREAMING)
        ]
        assert orphans[0].replies[0].platform_message_ids == ("9.2",)
        assert orphans[1].replies == ()
        assert await alive.orphans(["alive-2"], limit=10) == []

        # An answered message is never taken (a reply that ended meanwhile is not settled again).
        assert await alive.take_over([answered.id, done.id], "dead-1") == set()
        ids = [streaming.id, part.id]
        assert await alive.take_over(ids, "dead-1") == set(ids)
        assert await alive.take_over(ids, "dead-1") == set()  # only once
        assert await alive.forget_owner("dead-1") is False  # still owns the queued message
        await alive.take_over([queued.id], "dead-1")
        assert await alive.forget_owner("dead-1") is True
    finally:
        await engine.dispose()


async def test_text_the_database_refuses_is_cleaned_at_the_boundary(store: SqlChatStore) -> None:
    stored = await store.accept_inbound("slack", inbound("Ev1", "a\x00b \ud800 c", "1.1"))
    assert stored is not None
    reply = await store.add_message(
        stored.chat_id, Role.ASSISTANT, "x\x00", status=MessageStatus.PENDING
    )
    await store.save_reply(reply.id, ReplyProgress("y\x00\udfff", MessageStatus.COMPLETE))
    rows = await store.messages(stored.chat_id)
    assert [m.content for m in rows] == ["ab \ufffd c", "y\ufffd"]


async def test_old_events_messages_and_empty_chats_are_pruned(store: SqlChatStore) -> None:
    stored = await store.accept_inbound("slack", inbound("Ev1", "waiting", "1.1"))
    assert stored is not None
    await store.claim_event("slack", "old")
    assert await store.prune_events(older_than_seconds=-1) == 2
    assert await store.claim_event("slack", "old") is True
    # An unanswered message is kept whatever its age; once answered it goes, then its chat.
    assert await store.prune_messages(older_than_seconds=-1) == 0
    await store.mark_answered(stored.id)
    assert await store.prune_messages(older_than_seconds=-1) == 1
    assert await store.get_chat(KEY) is None


async def test_concurrent_reply_saves_are_coalesced_and_the_newest_wins(
    store: SqlChatStore,
) -> None:
    import asyncio

    chat = await store.get_or_create_chat(KEY)
    rows = [
        await store.add_message(chat.id, Role.ASSISTANT, "", status=MessageStatus.PENDING)
        for _ in range(200)
    ]
    commits_before = store.commits

    async def stream(row_id: int) -> None:
        for step in range(3):
            await store.save_reply(
                row_id, ReplyProgress(content=f"{row_id}:{step}", status=MessageStatus.STREAMING)
            )
        await store.save_reply(
            row_id, ReplyProgress(content=f"{row_id}:done", status=MessageStatus.COMPLETE)
        )

    await asyncio.gather(*(stream(row.id) for row in rows))
    # 800 saves from 200 concurrent replies: a handful of transactions, not 800.
    assert store.commits - commits_before <= 10
    saved = {m.id: m for m in await store.messages(chat.id)}
    for row in rows:
        assert saved[row.id].content == f"{row.id}:done"
        assert saved[row.id].status is MessageStatus.COMPLETE


async def test_saves_made_while_the_database_is_busy_join_one_write(store: SqlChatStore) -> None:
    # A busy SQLite (a burst of new replies queued for its one writer) must not pile up a batch
    # of saves, each holding a copy of the reply's text, per window it waits.
    import asyncio

    if store._turns is None:
        pytest.skip("only SQLite queues its writers in the event loop")
    chat = await store.get_or_create_chat(KEY)
    row = await store.add_message(chat.id, Role.ASSISTANT, "", status=MessageStatus.PENDING)
    commits_before = store.commits
    busy = asyncio.Event()
    release = asyncio.Event()

    async def hold_the_writer() -> None:
        async with store._begin():
            busy.set()
            await release.wait()

    holder = asyncio.create_task(hold_the_writer())
    await busy.wait()
    claims = [asyncio.create_task(store.claim_event("slack", f"ev-{i}")) for i in range(3)]
    saves = []
    for step in range(5):
        progress = ReplyProgress(content=f"part {step}", status=MessageStatus.STREAMING)
        saves.append(asyncio.create_task(store.save_reply(row.id, progress)))
        await asyncio.sleep(0.06)  # longer than the write window
    release.set()
    await asyncio.gather(holder, *saves)
    # One commit for all five saves, and it went ahead of the writers queued before it.
    assert store.commits - commits_before == 1
    assert not any(claim.done() for claim in claims)
    assert all(await asyncio.gather(*claims))
    saved = await store.get_message(row.id)
    assert saved is not None and saved.content == "part 4"


def test_the_head_revision_the_bridge_expects_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    from storage.migrate import alembic_config, head_revision

    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()
