"""A few conversations stored through the store's own API, for the browsing queries and the
console: a Slack thread answered, a Slack channel whose reply failed, a Discord channel with a
tool round, a file and reasoning, and a Discord channel still waiting for its answer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table, update

from bridge.domain import ChatKey, InboundMessage, MessageStatus, Role, StoredMessage, TokenUsage
from bridge.ports import ReplyProgress, ToolCall, ToolOutcome
from storage import SqlChatStore
from storage.models import ChatRow

CHATS = cast(Table, ChatRow.__table__)
THREAD = ChatKey("slack", "T1", "C1", "1700000000.000100")
FAILING = ChatKey("slack", "T1", "C2", "")
TOOLS = ChatKey("discord", "G1", "D1", "")
WAITING = ChatKey("discord", "G2", "D9", "")
# Last activity of each, oldest first: one a day.
DAYS = {THREAD: 1, FAILING: 2, TOOLS: 3, WAITING: 4}


@dataclass(frozen=True)
class Seeded:
    ids: dict[ChatKey, int]

    def at(self, key: ChatKey) -> int:
        return self.ids[key]


async def ask(
    store: SqlChatStore,
    key: ChatKey,
    text: str,
    message_id: str,
    *,
    author: str = "U1",
    metadata: dict[str, object] | None = None,
) -> StoredMessage:
    inbound = InboundMessage(f"Ev{key.channel}{message_id}", key, author, text, message_id)
    stored = await store.accept_inbound(key.platform, inbound, dict(metadata or {}))
    assert stored is not None
    return stored


async def answer(
    store: SqlChatStore,
    question: StoredMessage,
    text: str,
    *,
    status: MessageStatus = MessageStatus.COMPLETE,
    error: str | None = None,
    metadata: dict[str, object] | None = None,
) -> StoredMessage:
    reply = await store.add_message(
        question.chat_id,
        Role.ASSISTANT,
        "",
        status=MessageStatus.STREAMING,
        reply_to_id=question.id,
    )
    progress = ReplyProgress(
        text,
        status,
        platform_message_ids=[f"r{question.id}"],
        error=error,
        model="gpt-test",
        usage=TokenUsage(120, 30),
        metadata=dict(metadata or {}),
    )
    await store.save_reply(reply.id, progress)
    await store.mark_answered(question.id)
    return reply


async def seed(store: SqlChatStore) -> Seeded:
    ids: dict[ChatKey, int] = {}
    q = await ask(store, THREAD, "How do I reset my password?", "1.1", author="U1")
    await answer(store, q, "Open Settings, then Security, then Reset.")
    await store.set_title(q.chat_id, "Password reset")
    ids[THREAD] = q.chat_id

    q = await ask(store, FAILING, "Why did the deploy fail?", "2.1", author="U2")
    await answer(
        store,
        q,
        "Looking at",
        status=MessageStatus.FAILED,
        error="the model service returned an error",
    )
    ids[FAILING] = q.chat_id

    q = await ask(
        store,
        TOOLS,
        "What is the weather in Paris? See the map.",
        "3.1",
        author="U1",
        metadata={
            "author_name": "alice",
            "attachments": [{"name": "paris-map.png", "size": 2048, "mime_type": "image/png"}],
        },
    )
    reply = await store.add_message(
        q.chat_id, Role.ASSISTANT, "", status=MessageStatus.STREAMING, reply_to_id=q.id
    )
    call = ToolCall("call_w1", "weather.today", '{"city": "Paris"}')
    await store.add_tool_round(
        q.chat_id, q.id, [ToolOutcome(call, "Sunny, 21 °C", seconds=0.4)], model="gpt-test"
    )
    await store.save_reply(
        reply.id,
        ReplyProgress(
            "It is sunny in Paris, 21 °C.",
            MessageStatus.COMPLETE,
            model="gpt-test",
            usage=TokenUsage(300, 12),
            metadata={"reasoning": {"seconds": 3.5, "summary_chars": 0}},
        ),
    )
    await store.mark_answered(q.id)
    ids[TOOLS] = q.chat_id

    q = await ask(store, WAITING, "Is 50% off_sale still on?", "4.1", author="U3")
    ids[WAITING] = q.chat_id

    async with store._begin() as conn:  # noqa: SLF001 - the dates only the clock could set
        for key, day in DAYS.items():
            await conn.execute(
                update(CHATS)
                .where(CHATS.c.id == ids[key])
                .values(updated_at=datetime(2027, 1, day, 12, 0, tzinfo=UTC))
            )
    return Seeded(ids)
