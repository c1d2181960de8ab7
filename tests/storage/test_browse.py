"""Browsing the stored conversations (the console's port) on SQLite and PostgreSQL: filters,
keyset paging newest first, and one conversation in its order with its tool round."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from bridge.domain import MessageStatus, Role
from bridge.ports import ChatCursor, ChatFilter
from storage import SqlChatStore, create_engine, migrate
from tests.storage.conversations_seed import FAILING, THREAD, TOOLS, WAITING, Seeded, seed


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
