"""The local LLM server, driven by the real openai SDK and by raw HTTP over 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import math
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from sandbox.llm_server import Fault, LLMServer, ScriptedReply, lorem_reply, split_tokens
from sandbox.llm_server.ticker import Ticker

REPO_ROOT = Path(__file__).resolve().parents[2]
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
TEXT = 'Streaming works: "quoted", naïve café ☕, back\\slash,\nnew line and internationalization!'


@pytest.fixture
async def server() -> AsyncIterator[LLMServer]:
    async with LLMServer() as llm:
        yield llm


@pytest.fixture
async def client(server: LLMServer) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
    yield sdk
    await sdk.close()


async def stream_chunks(
    client: openai.AsyncOpenAI, *, n: int = 1, include_usage: bool = False
) -> list[ChatCompletionChunk]:
    stream = await client.chat.completions.create(
        model="local-llm",
        messages=USER,
        stream=True,
        n=n,
        stream_options={"include_usage": True} if include_usage else openai.omit,
    )
    return [chunk async for chunk in stream]


def text_of(chunks: list[ChatCompletionChunk], index: int = 0) -> str:
    return "".join(
        choice.delta.content or ""
        for chunk in chunks
        for choice in chunk.choices
        if choice.index == index
    )


async def eventually(condition: Callable[[], bool]) -> None:
    """Server-side cleanup happens just after the client sees the end: poll for it briefly."""
    for _ in range(150):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met within 3 s")


async def raw_post(server: LLMServer, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": "Bearer test"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{server.base_url}/chat/completions", json=body, headers=headers) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


# --- chunking and scripting --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", [TEXT, "", "one", "  leading and trailing  \n", "a\n\n```py\nx = 1\n```\n", "x" * 30]
)
def test_split_tokens_reassembles_text(text: str) -> None:
    tokens = split_tokens(text)
    assert "".join(tokens) == text
    assert all(len(token.strip()) <= 8 for token in tokens)


def test_split_tokens_is_about_one_word_per_token() -> None:
    assert split_tokens("Hello big world") == ["Hello", " big", " world"]
    assert split_tokens(" internationalization") == [" inte", "rnat", "iona", "liza", "tion"]


def test_lorem_reply_has_exactly_the_asked_tokens_and_a_code_fence() -> None:
    reply = lorem_reply(600)
    assert reply.chunks is not None and len(reply.chunks) == 600
    assert "```python" in "".join(reply.chunks)
    assert lorem_reply(600).chunks == reply.chunks  # deterministic
    short = lorem_reply(5)
    assert short.chunks is not None and len(short.chunks) == 5


def test_scripted_reply_rejects_chunks_that_do_not_match_text() -> None:
    with pytest.raises(ValueError):
        ScriptedReply(text="abc", chunks=["a", "b"])


# --- streaming through the openai SDK ---------------------------------------------------------


async def test_stream_reassembles_exact_text(server: LLMServer, client: openai.AsyncOpenAI) -> None:
    server.script(ScriptedReply(TEXT))
    chunks = await stream_chunks(client)

    assert text_of(chunks) == TEXT
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert deltas == split_tokens(TEXT)


async def test_explicit_chunks_are_streamed_as_given(
    server: LLMServer, client: openai.AsyncOpenAI
) -> None:
    server.script(ScriptedReply(chunks=["Hel", "lo", " wor", "ld"], model="other-model"))
    chunks = await stream_chunks(client)
    assert [c.choices[0].delta.content for c in chunks[1:-1]] == ["Hel", "lo", " wor", "ld"]
    assert chunks[0].model == "other-model"


async def test_default_responder_echoes_the_last_user_message(client: openai.AsyncOpenAI) -> None:
    assert text_of(await stream_chunks(client)) == "You said: hello there"


async def test_custom_responder_is_used_once_the_script_is_empty(
    server: LLMServer, client: openai.AsyncOpenAI
) -> None:
    server.responder = lambda request: ScriptedReply(f"{len(request['messages'])} messages")
    server.script("scripted first")
    assert text_of(await stream_chunks(client)) == "scripted first"
    assert text_of(await stream_chunks(client)) == "1 messages"


async def test_usage_chunk_comes_last_when_asked(
    server: LLMServer, client: openai.AsyncOpenAI
) -> None:
    server.script(ScriptedReply("one two three four"), ScriptedReply("one two"))
    chunks = await stream_chunks(client, include_usage=True)

    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 4
    assert last.usage.prompt_tokens == math.ceil(len("hello there") / 4)
    assert last.usage.total_tokens == last.usage.prompt_tokens + 4
    assert all(c.usage is None for c in chunks[:-1])

    without = await stream_chunks(client)
    assert all(c.usage is None and c.choices for c in without)


async def test_n2_streams_two_interleaved_choices(
    server: LLMServer, client: openai.AsyncOpenAI
) -> None:
    server.script(ScriptedReply(["alpha beta", "gamma delta epsilon"]), ScriptedReply("same text"))
    chunks = await stream_chunks(client, n=2)

    assert text_of(chunks, 0) == "alpha beta"
    assert text_of(chunks, 1) == "gamma delta epsilon"
    indexes = [c.choices[0].index for c in chunks]
    assert indexes[:4] == [0, 0, 1, 1]  # role then first delta of each choice, interleaved
    finishes = {c.choices[0].index for c in chunks if c.choices[0].finish_reason == "stop"}
    assert finishes == {0, 1}

    same = await stream_chunks(client, n=2)
    assert text_of(same, 0) == text_of(same, 1) == "same text"


async def test_non_stream_completion(server: LLMServer, client: openai.AsyncOpenAI) -> None:
    server.script(ScriptedReply("A short title", finish_reason="length"))
    completion = await client.chat.completions.create(model="local-llm", messages=USER)

    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "A short title"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 3
    assert server.stats.streams_started == 0


async def test_requests_are_recorded(server: LLMServer, client: openai.AsyncOpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "You said: first"},
        {"role": "user", "content": "second"},
    ]
    stream = await client.chat.completions.create(
        model="gpt-test", messages=messages, stream=True, temperature=0.2
    )
    assert text_of([c async for c in stream]) == "You said: second"

    assert len(server.requests) == 1
    sent = server.requests[0]
    assert sent["messages"] == messages
    assert sent["model"] == "gpt-test" and sent["stream"] is True and sent["temperature"] == 0.2
    assert server.stats.requests == 1


async def test_models_are_listed(client: openai.AsyncOpenAI) -> None:
    models = [model.id async for model in client.models.list()]
    assert models == ["local-llm"]


async def test_chunks_are_paced(server: LLMServer, client: openai.AsyncOpenAI) -> None:
    server.script(ScriptedReply(" ".join(["word"] * 20), tokens_per_second=100))
    started = time.monotonic()
    chunks = await stream_chunks(client)
    elapsed = time.monotonic() - started
    assert text_of(chunks).count("word") == 20
    assert 0.1 < elapsed < 2.0


async def test_first_token_delay_holds_back_the_first_chunk(
    server: LLMServer, client: openai.AsyncOpenAI
) -> None:
    server.script(ScriptedReply("late", first_token_delay=0.2))
    started = time.monotonic()
    stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
    first = await stream.__anext__()
    assert first.choices[0].delta.role == "assistant"
    assert time.monotonic() - started >= 0.15
    await stream.close()


# --- faults -----------------------------------------------------------------------------------


async def test_429_raises_rate_limit_error(server: LLMServer, client: openai.AsyncOpenAI) -> None:
    server.script(ScriptedReply(fault=Fault.status(429, retry_after=2)))
    with pytest.raises(openai.RateLimitError) as raised:
        await stream_chunks(client)
    assert raised.value.status_code == 429
    assert raised.value.response.headers["retry-after"] == "2"
    assert raised.value.code == "rate_limit_exceeded"


async def test_429_is_retried_by_the_sdk_after_retry_after(server: LLMServer) -> None:
    server.script(ScriptedReply(fault=Fault.status(429, retry_after=0.3)), ScriptedReply("ok now"))
    sdk = openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=1)
    started = time.monotonic()
    try:
        chunks = await stream_chunks(sdk)
    finally:
        await sdk.close()
    assert text_of(chunks) == "ok now"
    assert time.monotonic() - started >= 0.25
    assert len(server.requests) == 2


async def test_500_raises_internal_server_error(
    server: LLMServer, client: openai.AsyncOpenAI
) -> None:
    server.script(ScriptedReply(fault=Fault.status(500, message="boom")))
    with pytest.raises(openai.InternalServerError) as raised:
        await client.chat.completions.create(model="m", messages=USER)
    assert raised.value.status_code == 500
    assert raised.value.message.endswith("boom")
    assert server.stats.streams_started == 0


async def test_cut_mid_stream_raises_after_partial_text(
    server: LLMServer, client: openai.AsyncOpenAI
) -> None:
    server.script(ScriptedReply("one two three four five six", fault=Fault.cut_after(3)))
    received: list[str] = []
    stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "one two three"
    await eventually(lambda: server.stats.streams_active == 0)
    assert server.stats.streams_aborted == 1


async def test_cut_without_stream_drops_the_connection(
    server: LLMServer, client: openai.AsyncOpenAI
) -> None:
    server.script(ScriptedReply("never seen", fault=Fault.cut_after(0)))
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="m", messages=USER)


async def test_error_after_raises_api_error(server: LLMServer, client: openai.AsyncOpenAI) -> None:
    server.script(ScriptedReply("one two three", fault=Fault.error_after(2, "model overloaded")))
    received: list[str] = []
    stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
    with pytest.raises(openai.APIError, match="model overloaded"):
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "one two"


async def test_end_after_closes_the_body_cleanly_without_finish_or_done(
    server: LLMServer, client: openai.AsyncOpenAI
) -> None:
    server.script(ScriptedReply("one two three four", fault=Fault.end_after(2)))
    chunks = await stream_chunks(client, include_usage=True)  # the SDK sees an ordinary end
    assert text_of(chunks) == "one two"
    assert all(c.choices[0].finish_reason is None for c in chunks)
    assert all(c.usage is None for c in chunks)
    await eventually(lambda: server.stats.streams_active == 0)
    assert server.stats.streams_aborted == 1

    server.script(ScriptedReply("one two three", fault=Fault.end_after(1)))
    status, headers, raw = await raw_post(server, {"model": "m", "messages": USER, "stream": True})
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    assert b"[DONE]" not in raw and b'"finish_reason":"stop"' not in raw
    assert raw.endswith(b'"content":"one"},"logprobs":null,"finish_reason":null}]}\n\n')


async def test_send_done_false_ends_after_the_finish_reason_and_usage(
    server: LLMServer, client: openai.AsyncOpenAI
) -> None:
    server.script(ScriptedReply("polite close", send_done=False))
    status, _, raw = await raw_post(
        server,
        {"model": "m", "messages": USER, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert status == 200 and b"[DONE]" not in raw
    events = raw.split(b"\n\n")
    assert events.pop() == b""
    payloads = [json.loads(event[len(b"data: ") :]) for event in events]
    assert payloads[-2]["choices"][0]["finish_reason"] == "stop"
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"]["completion_tokens"] == 2
    assert server.stats.streams_completed == 1

    server.script(ScriptedReply("still fine", send_done=False))
    assert text_of(await stream_chunks(client)) == "still fine"


async def test_not_a_stream_answers_a_stream_request_with_a_whole_json_completion(
    server: LLMServer,
) -> None:
    server.script(ScriptedReply("all at once", fault=Fault.not_a_stream()))
    status, headers, raw = await raw_post(server, {"model": "m", "messages": USER, "stream": True})
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    completion = json.loads(raw)
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["content"] == "all at once"
    assert server.stats.streams_started == 0


async def test_not_a_stream_with_another_type_answers_a_proxys_html_page(
    server: LLMServer,
) -> None:
    server.script(ScriptedReply("x", fault=Fault.not_a_stream("text/html; charset=utf-8")))
    status, headers, raw = await raw_post(server, {"model": "m", "messages": USER, "stream": True})
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert raw.startswith(b"<!DOCTYPE html>") and b"data:" not in raw


async def test_nul_and_lone_surrogates_go_out_as_json_escapes(
    server: LLMServer, client: openai.AsyncOpenAI
) -> None:
    chunks = ["nul\x00here", " lone\ud800high", " lone\udfffl\u00f6w"]
    server.script(ScriptedReply(chunks=chunks))
    status, _, raw = await raw_post(server, {"model": "m", "messages": USER, "stream": True})
    assert status == 200
    raw.decode("utf-8")  # the body itself is valid UTF-8: the escapes carry the bad characters
    assert b'"nul\\u0000here"' in raw and b'" lone\\ud800high"' in raw
    assert b'" lone\\udfffl\\u00f6w"' in raw  # this chunk goes out all-ASCII, as escapes

    server.script(ScriptedReply(chunks=chunks))
    assert text_of(await stream_chunks(client)) == "".join(chunks)  # what json.loads makes of it


async def test_stall_triggers_a_client_read_timeout_and_the_stream_is_released(
    server: LLMServer,
) -> None:
    server.script(ScriptedReply("one two three", fault=Fault.stall_after(2, math.inf)))
    sdk = openai.AsyncOpenAI(
        base_url=server.base_url,
        api_key="test",
        max_retries=0,
        timeout=httpx2.Timeout(5.0, read=0.3),
    )
    received: list[str] = []
    try:
        stream = await sdk.chat.completions.create(model="m", messages=USER, stream=True)
        with pytest.raises(openai.APITimeoutError):
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
    finally:
        await sdk.close()

    assert "".join(received) == "one two"
    await eventually(lambda: server.stats.streams_active == 0)
    await eventually(lambda: server.ticker.pending == 0)
    assert server.stats.streams_aborted == 1


async def test_finite_stall_resumes_the_stream(
    server: LLMServer, client: openai.AsyncOpenAI
) -> None:
    server.script(ScriptedReply("one two three four", fault=Fault.stall_after(2, 0.3)))
    started = time.monotonic()
    chunks = await stream_chunks(client)
    assert text_of(chunks) == "one two three four"
    assert time.monotonic() - started >= 0.25
    assert server.stats.streams_completed == 1


async def test_stop_ends_a_stalled_stream_promptly() -> None:
    llm = LLMServer()
    await llm.start()
    llm.script(ScriptedReply("one two", fault=Fault.stall_after(1, math.inf)))
    sdk = openai.AsyncOpenAI(base_url=llm.base_url, api_key="test", max_retries=0)
    stream = await sdk.chat.completions.create(model="m", messages=USER, stream=True)
    await stream.__anext__()

    started = time.monotonic()
    await llm.stop()
    assert time.monotonic() - started < 5.0  # aiohttp alone would wait 60 s for the handler
    with pytest.raises(openai.APIConnectionError):
        async for _ in stream:
            pass
    await sdk.close()
    assert llm.stats.streams_active == 0


async def test_client_leaving_mid_stream_stops_the_stream(server: LLMServer) -> None:
    server.script(ScriptedReply(" ".join(["word"] * 200), tokens_per_second=100))
    body = {"model": "m", "messages": USER, "stream": True}
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            f"{server.base_url}/chat/completions", json=body, headers={"Authorization": "Bearer t"}
        )
        await resp.content.readuntil(b"\n\n")
        resp.close()  # drops the connection

    await eventually(lambda: server.stats.streams_active == 0)
    await eventually(lambda: server.ticker.pending == 0)
    assert server.stats.streams_aborted == 1
    assert server.stats.chunks_sent < 200


# --- raw wire format --------------------------------------------------------------------------


async def test_raw_sse_framing(server: LLMServer) -> None:
    server.script(ScriptedReply("Hi there", tokens_per_second=1000))
    status, headers, raw = await raw_post(
        server,
        {
            "model": "m",
            "messages": USER,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert status == 200
    assert headers["Content-Type"] == "text/event-stream"
    assert raw.endswith(b"\n\ndata: [DONE]\n\n")

    events = raw.split(b"\n\n")
    assert events.pop() == b""  # every event, [DONE] included, ends with a blank line
    assert all(event.startswith(b"data: ") and b"\n" not in event for event in events)
    assert events[-1] == b"data: [DONE]"
    payloads = [json.loads(event[len(b"data: ") :]) for event in events[:-1]]
    assert [p["choices"][0]["delta"] for p in payloads[:-1]] == [
        {"role": "assistant", "content": ""},
        {"content": "Hi"},
        {"content": " there"},
        {},
    ]
    assert payloads[-2]["choices"][0]["finish_reason"] == "stop"
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"]["completion_tokens"] == 2


async def test_chunks_due_in_the_same_tick_leave_in_one_write() -> None:
    # 50 chunks at 100/s with 0.1 s ticks: about six writes, not fifty.
    async with LLMServer(default_tokens_per_second=100, tick=0.1) as llm:
        llm.script(ScriptedReply(" ".join(["w"] * 50)))
        body = {"model": "m", "messages": USER, "stream": True}
        reads = 0
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{llm.base_url}/chat/completions", json=body, headers={"Authorization": "Bearer t"}
            ) as resp,
        ):
            async for _data in resp.content.iter_any():
                reads += 1
    assert llm.stats.chunks_sent == 50
    assert reads <= 15


async def test_missing_api_key_is_401_in_openai_shape(server: LLMServer) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{server.base_url}/chat/completions", json={"messages": USER}) as resp,
    ):
        assert resp.status == 401
        error = (await resp.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert server.requests == []


async def test_request_without_messages_is_400(server: LLMServer) -> None:
    status, _, raw = await raw_post(server, {"model": "m"})
    assert status == 400
    assert json.loads(raw)["error"]["param"] == "messages"


# --- load -------------------------------------------------------------------------------------


async def test_200_concurrent_streams_complete_and_leave_nothing_behind(
    server: LLMServer,
) -> None:
    streams, tokens = 200, 100
    reply = lorem_reply(tokens)
    server.responder = lambda _request: reply
    server.default_tokens_per_second = 200
    expected = "".join(reply.chunks or [])

    async def one(session: aiohttp.ClientSession) -> str:
        body = {"model": "m", "messages": USER, "stream": True}
        async with session.post(
            f"{server.base_url}/chat/completions", json=body, headers={"Authorization": "Bearer t"}
        ) as resp:
            raw = await resp.read()
        events = raw.split(b"\n\n")[:-2]  # drop [DONE] and the empty tail
        return "".join(
            json.loads(event[6:])["choices"][0]["delta"].get("content", "") for event in events
        )

    started, cpu = time.monotonic(), time.process_time()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        texts = await asyncio.gather(*(one(session) for _ in range(streams)))
    print(  # a measurement, not an assertion: run with -s to see it
        f"\n{streams} streams x {tokens} chunks: {time.monotonic() - started:.2f} s wall, "
        f"{time.process_time() - cpu:.2f} s CPU (server and client together)"
    )

    assert texts == [expected] * streams
    assert server.stats.streams_completed == streams
    assert server.stats.streams_active == 0
    assert server.stats.chunks_sent == streams * tokens
    assert server.ticker.pending == 0


# --- ticker -----------------------------------------------------------------------------------


async def test_ticker_wakes_waiters_of_one_tick_together_and_close_releases_them() -> None:
    ticker = Ticker(0.05)
    now = ticker.loop_time()
    boundary = (math.ceil(now / 0.05) + 1) * 0.05  # two times inside the tick ending here
    first, second = ticker.at(boundary - 0.04), ticker.at(boundary - 0.01)
    later = ticker.at(now + 10)
    woken = await asyncio.gather(first, second)
    assert woken[0] is not None and woken[0] == woken[1]
    assert woken[0] >= boundary - 0.01
    assert not later.done() and ticker.pending == 1
    ticker.close()
    assert await later is None
    assert await ticker.at(now) is None


# --- command line -----------------------------------------------------------------------------


async def test_command_line_server_streams_lorem_replies() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sandbox.llm_server",
        "--port",
        "0",
        "--reply-tokens",
        "50",
        "--tokens-per-second",
        "1000",
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
        base_url = line.decode().split()[-1]
        sdk = openai.AsyncOpenAI(base_url=base_url, api_key="test", max_retries=0)
        try:
            chunks = await stream_chunks(sdk)
        finally:
            await sdk.close()
        assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 50
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
