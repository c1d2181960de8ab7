"""Rich conversations in the store on SQLite and PostgreSQL: messages found by their platform ids
(a reply's continuations too), metadata merged key by key, users' edits and deletions, votes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime

import pytest
from sqlalchemy import func, select

from bridge.domain import ChatKey, InboundMessage, MessageStatus, Role, StoredMessage
from bridge.ports import ReplyProgress
from storage import SqlChatStore, create_engine, migrate
from storage.conversation import VOTES

KEY = ChatKey("slack", "T1", "C1", "1700000000.000100")
OTHER = ChatKey("discord", "", "D1", "")


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlChatStore]:
    await migrate(database_url)
    engine = create_engine(database_url)
    yield SqlChatStore(engine)
    await engine.dispose()


async def ask(store: SqlChatStore, text: str, message_id: str, key: ChatKey = KEY) -> StoredMessage:
    inbound = InboundMessage(f"Ev{message_id}", key, "U1", text, message_id)
    stored = await store.accept_inbound(key.platform, inbound)
    assert stored is not None
    return stored


async def answer(
    store: SqlChatStore,
    question: StoredMessage,
    text: str,
    ids: list[str],
    status: MessageStatus = MessageStatus.COMPLETE,
) -> StoredMessage:
    reply = await store.add_message(
        question.chat_id,
        Role.ASSISTANT,
        "",
        status=MessageStatus.STREAMING,
        reply_to_id=question.id,
    )
    await store.save_reply(reply.id, ReplyProgress(text, status, platform_message_ids=ids))
    await store.mark_answered(question.id)
    return reply


async def test_a_message_is_found_by_its_platform_id_or_a_continuation_of_a_reply(
    store: SqlChatStore,
) -> None:
    question = await ask(store, "a long answer please", "1.1")
    reply = await answer(store, question, "part one … part three", ["1.2", "1.3", "1.4"])
    elsewhere = await ask(store, "same id, other chat", "1.3", OTHER)

    found = await store.find_message(KEY, "1.1")
    assert found is not None and (found.id, found.role) == (question.id, Role.USER)
    for platform_id in ("1.2", "1.3", "1.4"):  # the first message of the reply, then the rest
        found = await store.find_message(KEY, platform_id)
        assert found is not None and found.id == reply.id, platform_id
        assert found.platform_message_ids == ("1.2", "1.3", "1.4")
    # Ids are per chat: the same id in another chat is another message.
    found = await store.find_message(OTHER, "1.3")
    assert found is not None and found.id == elsewhere.id
    assert await store.find_message(KEY, "9.9") is None
    assert await store.find_message(KEY, "1.") is None  # no prefix or pattern matching
    assert await store.find_message(ChatKey("slack", "T1", "C404", ""), "1.1") is None


async def test_a_continuation_is_looked_for_among_the_chats_newest_replies_only(
    store: SqlChatStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("storage.conversation.CONTINUATIONS_SEARCHED", 3)
    first = await ask(store, "q0", "0.1")
    old = await answer(store, first, "old", ["0.2", "0.3"])
    for n in range(1, 4):
        question = await ask(store, f"q{n}", f"{n}.1")
        await answer(store, question, f"a{n}", [f"{n}.2", f"{n}.3"])
    assert await store.find_message(KEY, "0.3") is None  # older than the newest three replies
    found = await store.find_message(KEY, "0.2")  # its first message is always found
    assert found is not None and found.id == old.id
    found = await store.find_message(KEY, "3.3")
    assert found is not None and found.content == "a3"


async def test_metadata_is_merged_key_by_key(store: SqlChatStore) -> None:
    question = await ask(store, "look at this", "1.1")
    await store.update_metadata(question.id, {"attachments": [{"name": "a.png", "key": None}]})
    await store.update_metadata(question.id, {"seen": {"by": "U2"}})
    await store.update_metadata(question.id, {"seen": {"at": 1}})  # a key is replaced whole
    stored = await store.get_message(question.id)
    assert stored is not None
    assert stored.metadata == {"attachments": [{"name": "a.png", "key": None}], "seen": {"at": 1}}
    await store.update_metadata(10**9, {"x": 1})  # a message that is gone: nothing to do
    assert await store.get_message(10**9) is None


async def test_concurrent_metadata_updates_of_one_message_keep_every_key(
    database_url: str,
) -> None:
    """Two instances (two connection pools) merging different keys into one message at once."""
    await migrate(database_url)
    engines = [create_engine(database_url), create_engine(database_url)]
    try:
        stores = [SqlChatStore(engine) for engine in engines]
        question = await ask(stores[0], "hello", "1.1")
        await asyncio.gather(
            *(stores[n % 2].update_metadata(question.id, {f"key{n}": n}) for n in range(20)),
            stores[1].edit_message(question.id, "hello, edited"),
        )
        stored = await stores[0].get_message(question.id)
        assert stored is not None
        assert {k: v for k, v in stored.metadata.items() if k.startswith("key")} == {
            f"key{n}": n for n in range(20)
        }
        assert "edited_at" in stored.metadata and stored.content == "hello, edited"
    finally:
        for engine in engines:
            await engine.dispose()


async def test_an_edit_changes_the_history_and_a_deletion_leaves_it(store: SqlChatStore) -> None:
    chat = await store.get_or_create_chat(KEY)
    first = await ask(store, "what is 2+2?", "1.1")
    await answer(store, first, "4", ["1.2"])
    second = await ask(store, "and 3+3?", "1.3")
    await answer(store, second, "6", ["1.4"])
    third = await ask(store, "thanks", "1.5")
    await store.update_metadata(first.id, {"attachments": []})

    await store.edit_message(first.id, "what is 2+3?\x00")
    edited = await store.get_message(first.id)
    assert edited is not None
    assert edited.content == "what is 2+3?"  # cleaned at the boundary like every text
    assert datetime.fromisoformat(edited.metadata["edited_at"]).utcoffset() is not None
    assert edited.metadata["attachments"] == []  # other keys stay
    assert "deleted" not in edited.metadata

    await store.edit_message(second.id, second.content, deleted=True)
    deleted = await store.get_message(second.id)
    assert deleted is not None and deleted.metadata["deleted"] is True
    assert deleted.status is MessageStatus.COMPLETE  # still stored, still answered
    context = await store.context_messages(chat, upto_id=third.id, limit=50)
    assert [m.content for m in context] == ["what is 2+3?", "4", "6", "thanks"]
    # The limit counts the messages that are sent, not the deleted ones.
    newest = await store.context_messages(chat, upto_id=third.id, limit=3)
    assert [m.content for m in newest] == ["4", "6", "thanks"]
    # Metadata that merely mentions "deleted" without it being true leaves a message in.
    await store.update_metadata(third.id, {"deleted": False})
    context = await store.context_messages(chat, upto_id=third.id, limit=50)
    assert context[-1].id == third.id
    await store.edit_message(10**9, "gone")  # a message pruned meanwhile: nothing to do


async def test_a_vote_is_one_per_user_and_the_last_one_counts(store: SqlChatStore) -> None:
    question = await ask(store, "q", "1.1")
    reply = await answer(store, question, "a", ["1.2"])
    assert await store.votes(reply.id) == {}
    assert await store.record_vote(reply.id, "U7", "up") is True
    assert await store.record_vote(reply.id, "U7", "up") is False  # the same vote again
    assert await store.record_vote(reply.id, "U8", "up") is True
    assert await store.record_vote(reply.id, "U7", "down") is True  # changed its mind
    assert await store.votes(reply.id) == {"U7": "down", "U8": "up"}
    assert await store.record_vote(reply.id, "U8", None) is True  # taken back
    assert await store.record_vote(reply.id, "U8", None) is False  # nothing to take back
    assert await store.record_vote(reply.id, "U9", None) is False
    assert await store.votes(reply.id) == {"U7": "down"}
    assert await store.record_vote(10**9, "U7", "up") is False  # no such message
    with pytest.raises(ValueError):
        await store.record_vote(reply.id, "U7", "sideways")


async def test_vote_totals_count_each_platform(store: SqlChatStore) -> None:
    slack_reply = await answer(store, await ask(store, "q", "1.1"), "a", ["1.2"])
    other_reply = await answer(store, await ask(store, "q", "2.1"), "b", ["2.2"])
    discord_reply = await answer(store, await ask(store, "q", "3.1", OTHER), "c", ["3.2"])
    assert await store.vote_totals() == {}
    for user, value in (("U1", "up"), ("U2", "up"), ("U3", "down")):
        await store.record_vote(slack_reply.id, user, value)
    await store.record_vote(other_reply.id, "U1", "up")
    await store.record_vote(discord_reply.id, "U1", "down")
    assert await store.vote_totals() == {
        "slack": {"up": 3, "down": 1},
        "discord": {"up": 0, "down": 1},
    }


async def test_votes_go_with_their_message_at_retention(store: SqlChatStore) -> None:
    question = await ask(store, "q", "1.1")
    reply = await answer(store, question, "a", ["1.2"])
    await store.record_vote(reply.id, "U1", "up")
    assert await store.prune_messages(older_than_seconds=-1) == 2
    assert await store.votes(reply.id) == {}
    async with store._read() as conn:
        assert (await conn.execute(select(func.count()).select_from(VOTES))).scalar() == 0


async def test_a_stopped_reply_is_finished_everywhere_statuses_count(store: SqlChatStore) -> None:
    await store.register_owner("host", 1)
    chat = await store.get_or_create_chat(KEY)
    question = await ask(store, "tell me a long story", "1.1")
    reply = await answer(store, question, "Once upon a", ["1.2"], MessageStatus.STOPPED)
    stored = await store.get_message(reply.id)
    assert stored is not None and stored.status is MessageStatus.STOPPED
    # Its text so far is context for the next turn.
    later = await ask(store, "go on", "1.3")
    context = await store.context_messages(chat, upto_id=later.id, limit=50)
    assert [m.content for m in context] == ["tell me a long story", "Once upon a", "go on"]
    # Not the inbox of anyone; its owner can be forgotten once the new question is answered.
    assert [o.user_message.id for o in await store.orphans([store.owner], 10)] == [later.id]
    await store.mark_answered(later.id)
    assert await store.orphans([store.owner], 10) == []
    assert await store.forget_owner(store.owner) is True
    # Retention takes it like any finished message.
    assert await store.prune_messages(older_than_seconds=-1) == 3
