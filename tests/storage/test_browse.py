"""Browsing the stored conversations (the console's port) on SQLite and PostgreSQL: filters,
keyset paging newest first, and one conversation in its order with its tool round."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from bridge.domain import ChatKey, MessageStatus, Role
from bridge.ports import ChatCursor, ChatFilter, ReplyProgress
from storage import SqlChatStore, browse, create_engine, migrate
from tests.storage.conversations_seed import (
    FAILING,
    THREAD,
    TOOLS,
    WAITING,
    Seeded,
    answer,
    ask,
    seed,
)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlChatStore]:
    await migrate(database_url)
    engine = create_engine(database_url)
    store = SqlChatStore(engine)
    yield store
    await store.close()
    await engine.dispose()


@pytest.fixture
async def seeded(store: SqlChatStore) -> Seeded:
    return await seed(store)


async def listed(store: SqlChatStore, where: ChatFilter, seeded: Seeded) -> list[str]:
    names = {chat_id: key.channel for key, chat_id in seeded.ids.items()}
    page = await store.browse(where)
    return [names[chat.id] for chat in page.chats]


async def test_newest_activity_first_with_what_each_row_shows(
    store: SqlChatStore, seeded: Seeded
) -> None:
    page = await store.browse(ChatFilter())
    assert [chat.key for chat in page.chats] == [WAITING, TOOLS, FAILING, THREAD]
    assert page.next is None
    by_key = {chat.key: chat for chat in page.chats}
    thread = by_key[THREAD]
    assert thread.title == "Password reset"
    assert thread.messages == 2
    assert thread.last_reply_status is MessageStatus.COMPLETE
    assert thread.last_activity == datetime(2027, 1, 1, 12, 0, tzinfo=UTC)
    assert by_key[FAILING].last_reply_status is MessageStatus.FAILED
    assert by_key[TOOLS].messages == 2  # the tool round is not counted
    assert by_key[WAITING].last_reply_status is None and by_key[WAITING].messages == 1


async def test_each_filter(store: SqlChatStore, seeded: Seeded) -> None:
    assert await listed(store, ChatFilter(platform="discord"), seeded) == ["D9", "D1"]
    assert await listed(store, ChatFilter(workspace="T1"), seeded) == ["C2", "C1"]
    assert await listed(store, ChatFilter(channel="D1"), seeded) == ["D1"]
    assert await listed(store, ChatFilter(user="U1"), seeded) == ["D1", "C1"]
    assert await listed(store, ChatFilter(status=MessageStatus.FAILED), seeded) == ["C2"]
    since = datetime(2027, 1, 2, tzinfo=UTC)
    until = datetime(2027, 1, 4, tzinfo=UTC)
    assert await listed(store, ChatFilter(since=since, until=until), seeded) == ["D1", "C2"]
    # Text anywhere in a message, any case; a tool's result is searched too.
    assert await listed(store, ChatFilter(text="PARIS"), seeded) == ["D1"]
    assert await listed(store, ChatFilter(text="sunny"), seeded) == ["D1"]
    # % and _ are the user's characters, not LIKE's wildcards.
    assert await listed(store, ChatFilter(text="50% off_"), seeded) == ["D9"]
    assert await listed(store, ChatFilter(text="5%f"), seeded) == []
    both = ChatFilter(platform="slack", user="U1", text="password")
    assert await listed(store, both, seeded) == ["C1"]
    assert await listed(store, ChatFilter(platform="slack", user="U3"), seeded) == []


async def test_pages_follow_each_other_by_keyset(store: SqlChatStore, seeded: Seeded) -> None:
    seen = []
    after: ChatCursor | None = None
    pages = 0
    while True:
        page = await store.browse(ChatFilter(), after=after, limit=3)
        pages += 1
        seen.extend(chat.key for chat in page.chats)
        if page.next is None:
            break
        assert len(page.chats) == 3
        after = page.next
    assert pages == 2
    assert seen == [WAITING, TOOLS, FAILING, THREAD]
    # A cursor from the page's last row: a conversation active since moves to the top, and the
    # pages after the cursor still hold each older one once.
    first = await store.browse(ChatFilter(), limit=2)
    assert first.next == ChatCursor(first.chats[-1].last_activity, first.chats[-1].id)
    rest = await store.browse(ChatFilter(), after=first.next, limit=2)
    assert [chat.key for chat in rest.chats] == [FAILING, THREAD] and rest.next is None


async def test_two_conversations_active_at_the_same_moment_are_both_paged(
    store: SqlChatStore, seeded: Seeded
) -> None:
    from sqlalchemy import update

    from tests.storage.conversations_seed import CHATS

    same = datetime(2027, 2, 1, tzinfo=UTC)
    async with store._begin() as conn:  # noqa: SLF001
        await conn.execute(update(CHATS).values(updated_at=same))
    keys = []
    after = None
    for _ in range(4):
        page = await store.browse(ChatFilter(), after=after, limit=1)
        keys.extend(chat.key for chat in page.chats)
        after = page.next
    assert sorted(map(str, keys)) == sorted(map(str, [WAITING, TOOLS, FAILING, THREAD]))
    assert after is None


async def test_one_conversation_in_its_order_with_its_tool_round(
    store: SqlChatStore, seeded: Seeded
) -> None:
    thread = await store.conversation(seeded.at(TOOLS))
    assert thread is not None
    assert thread.chat.key == TOOLS and thread.earlier == 0
    question, calls, result, reply = thread.messages
    assert question.role is Role.USER
    assert question.metadata["attachments"][0]["name"] == "paris-map.png"
    assert calls.role is Role.ASSISTANT and calls.metadata["tool_calls"][0]["name"] == (
        "weather.today"
    )
    assert result.role is Role.TOOL and result.content == "Sunny, 21 °C"
    assert result.metadata["tool_call_id"] == "call_w1"
    assert reply.content == "It is sunny in Paris, 21 °C." and reply.usage is not None
    assert reply.metadata["reasoning"]["seconds"] == 3.5

    short = await store.conversation(seeded.at(TOOLS), limit=2)
    assert short is not None
    assert [m.id for m in short.messages] == [result.id, reply.id] and short.earlier == 2
    assert await store.conversation(10_000_000) is None


SEARCHES = ("PARIS", "sunny", "50% off_", "5%f", "password", "pa", "°C", 'say "hi"', "été")


async def test_the_search_index_finds_what_the_walk_finds(
    store: SqlChatStore, seeded: Seeded
) -> None:
    """Revision 0011's index (an FTS5 table on SQLite, pg_trgm on PostgreSQL) is there and
    answers each search as the walk through every message does: same conversations, same order."""
    quoted = await ask(store, ChatKey("slack", "T1", "C7", ""), 'Did she say "hi" in été?', "7.1")
    await answer(store, quoted, "She did.")
    async with store._read() as conn:
        assert await store._has_search_index(conn)
    found = {text: await store.browse(ChatFilter(text=text)) for text in SEARCHES}
    store._search_index = False  # as on a database without the index
    walked = {text: await store.browse(ChatFilter(text=text)) for text in SEARCHES}
    assert found == walked
    assert [len(found[text].chats) for text in SEARCHES] == [1, 1, 1, 0, 1, 2, 1, 1, 1]


async def test_a_reply_is_found_once_it_ends_and_not_after_it_is_gone(
    store: SqlChatStore, database_url: str
) -> None:
    """The index holds finished messages: a streaming reply's progress saves do not enter it,
    its end does, a change of its text moves it, and a pruned message leaves it."""
    key = ChatKey("discord", "G1", "D5", "")
    question = await ask(store, key, "Tell me about marsupials", "5.1")
    reply = await store.add_message(
        question.chat_id,
        Role.ASSISTANT,
        "",
        status=MessageStatus.STREAMING,
        reply_to_id=question.id,
    )

    async def found(text: str) -> bool:
        return bool((await store.browse(ChatFilter(text=text))).chats)

    for words in ("The quokka", "The quokka smiles", "The quokka smiles at wombats"):
        await store.save_reply(reply.id, ReplyProgress(words, MessageStatus.STREAMING))
        assert not await found("quokka")
    assert await found("marsupials")  # the question is finished: found at once
    await store.save_reply(reply.id, ReplyProgress("The quokka smiles.", MessageStatus.COMPLETE))
    assert await found("quokka smiles.")
    await store.save_reply(reply.id, ReplyProgress("A numbat.", MessageStatus.COMPLETE))
    assert not await found("quokka") and await found("NUMBAT")
    await store.save_reply(reply.id, ReplyProgress("A numbat, again", MessageStatus.STREAMING))
    assert not await found("numbat")
    await store.save_reply(reply.id, ReplyProgress("A bilby.", MessageStatus.INTERRUPTED))
    assert await found("bilby")
    await integrity_checked(store, database_url)
    await store.mark_answered(question.id)
    assert await store.prune_messages(-60) == 2
    assert not await found("bilby") and not await found("marsupials")
    await integrity_checked(store, database_url)


async def integrity_checked(store: SqlChatStore, database_url: str) -> None:
    """SQLite's FTS5 compares its index with the text of `messages` (an error if they differ)."""
    if not database_url.startswith("sqlite"):
        return
    async with store._begin() as conn:
        await conn.exec_driver_sql(
            "INSERT INTO messages_search(messages_search, rank) VALUES ('integrity-check', 1)"
        )


async def test_without_the_right_to_create_pg_trgm_the_migration_warns_and_search_walks(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A role that may not create extensions still migrates to the head; the search reads the
    messages instead of the index, with the same results."""
    import asyncpg

    dsn = postgres_url.replace("postgresql+asyncpg://", "postgresql://")
    role = "cb_no_extensions_" + postgres_url.rsplit("_", 1)[1]
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN")
        await admin.execute(f"GRANT ALL ON SCHEMA public TO {role}")
        await admin.execute("DROP EXTENSION IF EXISTS pg_trgm")
        base, database = postgres_url.rsplit("/", 1)
        limited = base.replace("://postgres@", f"://{role}@") + "/" + database
        with caplog.at_level("WARNING", logger="chat_bridge.migrations"):
            await migrate(limited)
        assert "pg_trgm could not be created" in caplog.text
        engine = create_engine(limited)
        store = SqlChatStore(engine)
        try:
            seeded = await seed(store)
            async with store._read() as conn:
                assert not await store._has_search_index(conn)
            assert await listed(store, ChatFilter(text="PARIS"), seeded) == ["D1"]
        finally:
            await store.close()
            await engine.dispose()
    finally:
        # The role's tables go with the database (the fixture's); the role goes here.
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


async def test_a_text_common_in_the_sample_is_walked_with_the_same_results(
    store: SqlChatStore, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL samples the table before it trusts pg_trgm with a text: found often enough
    there, the text is walked instead. Either way the conversations are the same."""
    found = {text: await store.browse(ChatFilter(text=text)) for text in SEARCHES}
    monkeypatch.setattr(browse, "SAMPLE_COMMON", 0)  # every text counts as common
    monkeypatch.setattr(browse, "INDEX_AT_MOST", -1)  # SQLite's probe: the same
    assert {text: await store.browse(ChatFilter(text=text)) for text in SEARCHES} == found


async def test_a_search_text_with_a_nul_finds_nothing_and_fails_nothing(
    store: SqlChatStore, seeded: Seeded
) -> None:
    """FTS5's query text ends at a NUL; no stored message holds one, so nothing is found."""
    assert (await store.browse(ChatFilter(text="pass\x00word"))).chats == ()
