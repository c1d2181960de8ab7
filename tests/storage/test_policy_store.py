"""The admin policy's storage on SQLite and PostgreSQL: the settings a message is answered with,
/reset for a whole channel, runtime overrides and the daily token counters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date

import pytest

from bridge.domain import ChatKey, InboundMessage, MessageStatus, Role
from bridge.ports import ReplyProgress, UsageLine
from storage import SqlChatStore, create_engine, migrate
from storage.migrate import current_revision, head_revision

DAY = date(2026, 12, 9)
NEXT_DAY = date(2026, 12, 10)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlChatStore]:
    await migrate(database_url)
    engine = create_engine(database_url)
    yield SqlChatStore(engine)
    await engine.dispose()


def inbound(event_id: str, key: ChatKey, message_id: str, text: str = "hi") -> InboundMessage:
    return InboundMessage(event_id, key, "U1", text, message_id)


async def test_the_settings_a_message_is_answered_with_are_stored_with_it(
    store: SqlChatStore,
) -> None:
    key = ChatKey("slack", "T1", "C1", "1.0")
    settings = {"model": "gpt-x", "max_tokens": 500, "origin": {"model": "runtime"}}
    alone = await store.accept_inbound("slack", inbound("Ev1", key, "1.1"), settings)
    assert alone is not None and alone.metadata == settings
    # Messages arriving together are stored in one batch: each keeps its own metadata.
    burst = [
        (InboundMessage("Ev2", key, "U2", "named", "1.2", author_name="Ada"), {"model": "a"}),
        (inbound("Ev3", key, "1.3"), None),
        (inbound("Ev4", key, "1.4"), {"model": "b"}),
    ]
    before = store._inbound.batches
    results = await asyncio.gather(*(store.accept_inbound("slack", m, s) for m, s in burst))
    assert store._inbound.batches - before == 1
    assert [r.metadata if r else None for r in results] == [
        {"model": "a", "author_name": "Ada"},
        {},
        {"model": "b"},
    ]
    # What recovery reads back after a restart is what was stored.
    stored = {m.id: m.metadata for m in await store.messages(alone.chat_id)}
    assert stored[alone.id] == settings
    assert [stored[r.id] for r in results if r] == [r.metadata for r in results if r]
    # A replayed event stores nothing, whatever metadata it comes with.
    assert await store.accept_inbound("slack", inbound("Ev1", key, "1.1"), {"model": "c"}) is None


async def test_reset_place_starts_every_chat_of_one_channel_afresh(store: SqlChatStore) -> None:
    threads = [ChatKey("slack", "T1", "C1", thread) for thread in ("", "1.0", "2.0")]
    elsewhere = [ChatKey("slack", "T1", "C2", "1.0"), ChatKey("slack", "T2", "C1", "1.0")]
    empty = ChatKey("slack", "T1", "C1", "3.0")  # a chat with no message yet
    await store.get_or_create_chat(empty)
    for n, key in enumerate(threads + elsewhere):
        await store.accept_inbound("slack", inbound(f"Old{n}", key, f"{n}.1", "before"))

    assert await store.reset_place("slack", "T1", "C1") == 4

    for n, key in enumerate(threads + elsewhere):
        after = await store.accept_inbound("slack", inbound(f"New{n}", key, f"{n}.2", "after"))
        assert after is not None
        chat = await store.get_chat(key)
        assert chat is not None
        context = [m.content for m in await store.context_messages(chat, after.id, 10)]
        expected = ["after"] if key in threads else ["before", "after"]
        assert context == expected, key
    chat = await store.get_chat(empty)
    assert chat is not None and chat.context_floor == 0
    assert await store.reset_place("discord", "G1", "C1") == 0


async def test_reset_place_keeps_a_reply_that_ends_later_out_of_the_new_context(
    store: SqlChatStore,
) -> None:
    key = ChatKey("discord", "G1", "C1", "")
    question = await store.accept_inbound("discord", inbound("Ev1", key, "1", "question"))
    assert question is not None
    reply = await store.add_message(
        question.chat_id, Role.ASSISTANT, "", status=MessageStatus.STREAMING,
        reply_to_id=question.id,
    )  # fmt: skip
    assert await store.reset_place("discord", "G1", "C1") == 1
    await store.save_reply(reply.id, ReplyProgress("old answer", MessageStatus.COMPLETE))
    await store.close()  # the write-behind flushes
    fresh = await store.accept_inbound("discord", inbound("Ev2", key, "2", "fresh"))
    assert fresh is not None
    chat = await store.get_chat(key)
    assert chat is not None
    assert [m.content for m in await store.context_messages(chat, fresh.id, 10)] == ["fresh"]


async def test_runtime_overrides_are_set_key_by_key_listed_and_cleared(
    store: SqlChatStore,
) -> None:
    assert await store.runtime_overrides() == []
    await store.set_runtime_override("slack", "C1", "model", "gpt-a", set_by="U1")
    await store.set_runtime_override("slack", "C1", "temperature", "0.2", set_by="U2")
    await store.set_runtime_override("slack", "C1", "model", "gpt-b", set_by="U2")
    await store.set_runtime_override("discord", "C1", "model", "gpt-c", set_by="D1")
    overrides = await store.runtime_overrides()
    assert [(o.platform, o.scope, o.values, o.set_by) for o in overrides] == [
        ("discord", "C1", {"model": "gpt-c"}, "D1"),
        ("slack", "C1", {"model": "gpt-b", "temperature": "0.2"}, "U2"),
    ]
    assert all(o.set_at is not None and o.set_at.tzinfo is not None for o in overrides)

    assert await store.clear_runtime_overrides("slack", "C1") is True
    assert await store.clear_runtime_overrides("slack", "C1") is False
    assert [(o.platform, o.scope) for o in await store.runtime_overrides()] == [("discord", "C1")]


async def test_two_admins_setting_keys_of_one_channel_at_once_both_keep_theirs(
    database_url: str,
) -> None:
    await migrate(database_url)
    engines = [create_engine(database_url), create_engine(database_url)]
    try:
        first, second = (SqlChatStore(engine) for engine in engines)
        await asyncio.gather(
            *(
                store.set_runtime_override("slack", "C1", f"key{n}", str(n), set_by="U1")
                for n, store in enumerate([first, second] * 5)
            )
        )
        [override] = await first.runtime_overrides()
        assert override.values == {f"key{n}": str(n) for n in range(10)}
    finally:
        for engine in engines:
            await engine.dispose()


async def test_usage_counts_the_user_and_the_channel_in_one_write_per_day(
    store: SqlChatStore,
) -> None:
    writes = store.writes
    await store.add_usage(DAY, "slack", user="U1", channel="C1", tokens=100)
    assert store.writes - writes == 1
    await store.add_usage(DAY, "slack", user="U1", channel="C2", tokens=30)
    await store.add_usage(DAY, "slack", user="U2", channel="C1", tokens=5)
    await store.add_usage(NEXT_DAY, "slack", user="U1", channel="C1", tokens=7)
    await store.add_usage(DAY, "discord", user="U1", channel="C1", tokens=1000)

    assert await store.usage_of(DAY, "slack", user="U1", channel="C1") == (130, 105)
    assert await store.usage_of(DAY, "slack", user="U2", channel="C2") == (5, 30)
    assert await store.usage_of(NEXT_DAY, "slack", user="U1", channel="C1") == (7, 7)
    assert await store.usage_of(DAY, "discord", user="U1", channel="C1") == (1000, 1000)
    assert await store.usage_of(DAY, "slack", user="nobody", channel="nowhere") == (0, 0)
    # A user and a channel with the same id are counted apart.
    assert await store.usage_of(DAY, "slack", user="C1", channel="U1") == (0, 0)


async def test_concurrent_replies_lose_no_tokens(database_url: str) -> None:
    await migrate(database_url)
    engines = [create_engine(database_url), create_engine(database_url)]
    try:
        stores = [SqlChatStore(engine) for engine in engines]
        await asyncio.gather(
            *(
                stores[n % 2].add_usage(DAY, "slack", user="U1", channel="C1", tokens=n)
                for n in range(40)
            )
        )
        assert await stores[0].usage_of(DAY, "slack", user="U1", channel="C1") == (780, 780)
        report = await stores[1].usage_report(DAY, "slack")
        assert report.users == (UsageLine("U1", 780, 40),)
    finally:
        for engine in engines:
            await engine.dispose()


async def test_usage_report_lists_the_biggest_first_ties_by_key(store: SqlChatStore) -> None:
    spent = [("U3", "C1", 50), ("U1", "C2", 80), ("U2", "C1", 50), ("U4", "C3", 10)]
    for user, channel, tokens in spent:
        await store.add_usage(DAY, "slack", user=user, channel=channel, tokens=tokens)
    await store.add_usage(DAY, "slack", user="U4", channel="C3", tokens=5)
    await store.add_usage(NEXT_DAY, "slack", user="U9", channel="C9", tokens=999)
    await store.add_usage(DAY, "discord", user="U8", channel="C8", tokens=999)

    report = await store.usage_report(DAY, "slack", limit=3)
    assert report.day == DAY
    assert report.users == (UsageLine("U1", 80, 1), UsageLine("U2", 50, 1), UsageLine("U3", 50, 1))
    assert report.channels == (
        UsageLine("C1", 100, 2),
        UsageLine("C2", 80, 1),
        UsageLine("C3", 15, 2),
    )
    everyone = await store.usage_report(DAY, "slack")
    assert [line.key for line in everyone.users] == ["U1", "U2", "U3", "U4"]
    empty = await store.usage_report(date(2020, 1, 1), "slack")
    assert (empty.users, empty.channels) == ((), ())


async def test_usage_and_overrides_survive_a_restart(database_url: str) -> None:
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        before = SqlChatStore(engine)
        await before.add_usage(DAY, "slack", user="U1", channel="C1", tokens=42)
        await before.set_runtime_override("slack", "C1", "model", "gpt-a", set_by="U1")
        await before.close()
    finally:
        await engine.dispose()
    engine = create_engine(database_url)
    try:
        after = SqlChatStore(engine)
        assert await after.usage_of(DAY, "slack", user="U1", channel="C1") == (42, 42)
        assert [o.values for o in await after.runtime_overrides()] == [{"model": "gpt-a"}]
    finally:
        await engine.dispose()


async def test_retention_drops_the_token_counts_of_past_days(store: SqlChatStore) -> None:
    today = date.today()
    await store.add_usage(date(2020, 1, 1), "slack", user="U1", channel="C1", tokens=5)
    await store.add_usage(today, "slack", user="U1", channel="C1", tokens=7)
    await store.prune_messages(older_than_seconds=2 * 86400)
    assert await store.usage_of(date(2020, 1, 1), "slack", user="U1", channel="C1") == (0, 0)
    assert await store.usage_of(today, "slack", user="U1", channel="C1") == (7, 7)


async def test_migration_0003_upgrades_a_database_at_0002(database_url: str) -> None:
    await migrate(database_url, "0002")
    assert await current_revision(database_url) == "0002"
    key = ChatKey("slack", "T1", "C1", "")
    engine = create_engine(database_url)
    try:
        old = SqlChatStore(engine)
        kept = await old.accept_inbound("slack", inbound("Ev1", key, "1.1", "kept"))
        assert kept is not None
    finally:
        await engine.dispose()

    await migrate(database_url)
    assert await current_revision(database_url) == head_revision()
    engine = create_engine(database_url)
    try:
        store = SqlChatStore(engine)
        assert [m.content for m in await store.messages(kept.chat_id)] == ["kept"]
        await store.add_usage(DAY, "slack", user="U1", channel="C1", tokens=3)
        await store.set_runtime_override("slack", "C1", "model", "m", set_by="U1")
        assert await store.usage_of(DAY, "slack", user="U1", channel="C1") == (3, 3)
        assert len(await store.runtime_overrides()) == 1
    finally:
        await engine.dispose()
