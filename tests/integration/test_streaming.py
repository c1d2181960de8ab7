"""The responder end to end: the real openai SDK against the local SSE server, the SQL store on
SQLite and PostgreSQL, and an in-process platform. Real time, so timing checks are loose."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.llm import OpenAICompatibleModel
from bridge.config import LLMSettings
from bridge.domain import MessageStatus, Role
from bridge.responder import Responder, ResponderSettings
from bridge.scheduler import EditScheduler
from sandbox.llm_server import Fault, LLMServer, ScriptedReply
from sandbox.memory_platform import RecordingSurface
from storage import SqlChatStore, create_engine, migrate
from tests.fakes import inbound

TEXT = " ".join(f"word{i}" for i in range(80)) + "."


@pytest.fixture
async def parts(database_url: str) -> AsyncIterator[tuple[Responder, SqlChatStore, LLMServer]]:
    await migrate(database_url)
    engine = create_engine(database_url)
    store = SqlChatStore(engine)
    async with LLMServer() as server:
        llm = OpenAICompatibleModel(
            LLMSettings(base_url=server.base_url, api_key="k", idle_timeout=1.0)  # type: ignore[arg-type]
        )
        settings = ResponderSettings(model="m", titles=False, idle_timeout=1.0, max_retries=2)
        responder = Responder(
            store=store, llm=llm, scheduler=EditScheduler(interval=1.0), settings=settings
        )
        yield responder, store, server
        await llm.stop()
    await engine.dispose()


async def test_a_streamed_reply_lands_on_the_platform_and_in_the_database(
    parts: tuple[Responder, SqlChatStore, LLMServer],
) -> None:
    responder, store, server = parts
    server.script(ScriptedReply(text=TEXT, tokens_per_second=40))  # about 4 seconds
    surface = RecordingSurface()
    report = await responder.handle("test", inbound("hello", "e1"), surface)
    assert report is not None and report.status is MessageStatus.COMPLETE
    updates = surface.updates()
    assert 2 <= len(updates) <= 6 and updates[-1].text == TEXT
    assert list(surface.shown.values()) == [TEXT]
    assert report.first_text_at is not None and report.first_delta_at is not None
    assert report.first_text_at - report.first_delta_at < 0.5
    [chat] = [await store.get_or_create_chat(inbound("x", "x").chat_key)]
    rows = await store.messages(chat.id)
    assert [(m.role, m.status) for m in rows] == [
        (Role.USER, MessageStatus.COMPLETE),
        (Role.ASSISTANT, MessageStatus.COMPLETE),
    ]
    reply = rows[1]
    assert reply.content == TEXT and reply.usage is not None
    assert reply.usage.completion_tokens > 50
    assert reply.metadata["time_to_first_token_ms"] is not None
    assert reply.platform_message_ids == tuple(surface.shown)


async def test_a_cut_stream_fails_visibly_and_the_next_message_works(
    parts: tuple[Responder, SqlChatStore, LLMServer],
) -> None:
    responder, store, server = parts
    server.script(
        ScriptedReply(text=TEXT, tokens_per_second=200, fault=Fault.cut_after(20)),
        ScriptedReply(text="Recovered."),
    )
    surface = RecordingSurface()
    report = await responder.handle("test", inbound("hello", "e1"), surface)
    assert report is not None and report.status is MessageStatus.FAILED
    [shown] = surface.shown.values()
    assert shown.startswith("word0 word1") and "Reply interrupted" in shown
    assert not surface.typing_now
    second = RecordingSurface()
    report = await responder.handle("test", inbound("again", "e2"), second)
    assert report is not None and report.status is MessageStatus.COMPLETE
    assert list(second.shown.values()) == ["Recovered."]
    context = [m["content"] for m in server.requests[-1]["messages"] if m["role"] != "system"]
    assert context[0] == "hello" and context[1].startswith("word0") and context[2] == "again"


async def test_a_stall_ends_the_reply_at_the_idle_timeout(
    parts: tuple[Responder, SqlChatStore, LLMServer],
) -> None:
    responder, store, server = parts
    server.script(ScriptedReply(text=TEXT, fault=Fault.stall_after(5, float("inf"))))
    surface = RecordingSurface()
    report = await responder.handle("test", inbound("hello", "e1"), surface)
    assert report is not None and report.status is MessageStatus.FAILED
    assert report.final_at is not None and report.final_at - report.received_at < 5
    assert not surface.typing_now
    replies = [m for m in await store.messages(1) if m.role is Role.ASSISTANT]
    assert replies[0].status is MessageStatus.FAILED and replies[0].error


async def test_a_429_before_the_first_token_is_retried(
    parts: tuple[Responder, SqlChatStore, LLMServer],
) -> None:
    responder, _, server = parts
    server.script(
        ScriptedReply(text="x", fault=Fault.status(429, retry_after=0.2)),
        ScriptedReply(text="After the retry."),
    )
    surface = RecordingSurface()
    report = await responder.handle("test", inbound("hello", "e1"), surface)
    assert report is not None and report.status is MessageStatus.COMPLETE
    assert report.attempts == 2 and list(surface.shown.values()) == ["After the retry."]


async def test_a_refused_connection_shows_a_notice_that_names_no_host(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    await migrate(database_url)
    engine = create_engine(database_url)
    closed = LLMServer()
    await closed.start()
    base_url = closed.base_url
    await closed.stop()  # nothing listens there any more: connections are refused
    llm = OpenAICompatibleModel(LLMSettings(base_url=base_url, api_key="k"))  # type: ignore[arg-type]
    responder = Responder(
        store=SqlChatStore(engine),
        llm=llm,
        scheduler=EditScheduler(interval=1.0),
        settings=ResponderSettings(model="m", titles=False, max_retries=0),
    )
    try:
        surface = RecordingSurface()
        report = await responder.handle("test", inbound("hello", "e1"), surface)
    finally:
        await llm.stop()
        await engine.dispose()
    assert report is not None and report.status is MessageStatus.FAILED
    [shown] = surface.shown.values()
    host = base_url.split("//")[1].split("/")[0]  # 127.0.0.1:PORT
    assert host not in shown and "127.0.0.1" not in shown and "connect" not in shown.lower()
    assert "the model service returned an error (ref " in shown
    ref = shown.split("(ref ")[1][:6]
    # The details are in the log line that carries the same reference.
    [line] = [r.getMessage() for r in caplog.records if ref in r.getMessage()]
    assert "Cannot connect to host" in line and host in line
