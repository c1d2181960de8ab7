"""The local LLM server as a reasoning model and as a model with or without vision, driven by the
real openai SDK and raw HTTP over 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from sandbox.llm_server import (
    NO_VISION_MESSAGE,
    Fault,
    LLMServer,
    ScriptedReply,
    echo_reply,
    image_urls,
    message_text,
    reasoning_responder,
)
from sandbox.llm_server.script import ReasoningForm

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_URL = "data:image/png;base64," + "iVBORw0KGgo" * 100
WITH_IMAGE: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "be brief"},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "what is wrong here?"},
            {"type": "image_url", "image_url": {"url": IMAGE_URL}},
        ],
    },
]
TEXT_ONLY: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def server() -> AsyncIterator[LLMServer]:
    async with LLMServer() as llm:
        yield llm


@pytest.fixture
async def client(server: LLMServer) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
    yield sdk
    await sdk.close()


async def stream(
    client: openai.AsyncOpenAI, messages: list[ChatCompletionMessageParam] = TEXT_ONLY
) -> list[ChatCompletionChunk]:
    chunks = await client.chat.completions.create(model="m", messages=messages, stream=True)
    return [chunk async for chunk in chunks]


def field(chunks: list[ChatCompletionChunk], name: str) -> str:
    """One delta key over the stream; the SDK keeps keys it does not know as extra fields."""
    return "".join(
        getattr(choice.delta, name, None) or "" for chunk in chunks for choice in chunk.choices
    )


async def raw_stream_deltas(server: LLMServer) -> list[dict[str, Any]]:
    body = {"model": "m", "messages": TEXT_ONLY, "stream": True}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{server.base_url}/chat/completions", json=body, headers={"Authorization": "Bearer t"}
        ) as resp,
    ):
        raw = (await resp.read()).decode()
    events = [line[6:] for line in raw.split("\n\n") if line.startswith("data: {")]
    return [json.loads(e)["choices"][0]["delta"] for e in events if json.loads(e)["choices"]]


# --- reasoning ---------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["reasoning_content", "reasoning"])
async def test_reasoning_streams_in_its_own_key_before_the_answer(
    server: LLMServer, client: openai.AsyncOpenAI, form: ReasoningForm
) -> None:
    server.script(
        ScriptedReply("The answer.", reasoning="First, think it over.", reasoning_as=form)
    )
    chunks = await stream(client)
    assert field(chunks, form) == "First, think it over."
    assert field(chunks, "content") == "The answer."
    thinking = [
        i for i, c in enumerate(chunks) if c.choices and getattr(c.choices[0].delta, form, None)
    ]
    answering = [i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content]
    assert max(thinking) < min(answering)


async def test_reasoning_wire_shapes(server: LLMServer) -> None:
    # DeepSeek sends reasoning_content beside a null content; newer vLLM sends "reasoning" alone.
    server.script(ScriptedReply("ok", reasoning="hmm"))
    assert {"content": None, "reasoning_content": "hmm"} in await raw_stream_deltas(server)
    server.script(ScriptedReply("ok", reasoning="hmm", reasoning_as="reasoning"))
    assert {"reasoning": "hmm"} in await raw_stream_deltas(server)


async def test_think_form_puts_the_reasoning_in_the_content(
    server: LLMServer, client: openai.AsyncOpenAI
) -> None:
    server.script(ScriptedReply("The answer.", reasoning="Think it over.", reasoning_as="think"))
    content = field(await stream(client), "content")
    assert content == "<think>\nThink it over.\n</think>\n\nThe answer."


async def test_reasoning_takes_the_time_asked_then_the_answer_comes_at_its_pace(
    server: LLMServer, client: openai.AsyncOpenAI
) -> None:
    server.script(
        ScriptedReply(
            "two words", reasoning="one two three four five", reasoning_seconds=0.5,
            tokens_per_second=1000,
        )
    )  # fmt: skip
    started = time.monotonic()
    first_reasoning = first_content = None
    response = await client.chat.completions.create(model="m", messages=TEXT_ONLY, stream=True)
    async for chunk in response:
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta is not None and getattr(delta, "reasoning_content", None) and not first_reasoning:
            first_reasoning = time.monotonic() - started
        if delta is not None and delta.content and first_content is None:
            first_content = time.monotonic() - started
    assert first_reasoning is not None and first_reasoning < 0.3
    assert first_content is not None and 0.45 <= first_content < 1.5


async def test_a_stall_while_reasoning_resumes_the_schedule(
    server: LLMServer, client: openai.AsyncOpenAI
) -> None:
    server.script(
        ScriptedReply(
            "the answer", reasoning="a b c d", reasoning_seconds=0.2, tokens_per_second=200,
            fault=Fault.stall_after(2, 0.3),
        )
    )  # fmt: skip
    started = time.monotonic()
    chunks = await stream(client)
    elapsed = time.monotonic() - started
    assert field(chunks, "reasoning_content") == "a b c d"
    assert field(chunks, "content") == "the answer"
    assert 0.45 <= elapsed < 2.0


async def test_reasoning_responder_wraps_any_responder(
    server: LLMServer, client: openai.AsyncOpenAI
) -> None:
    server.responder = reasoning_responder(echo_reply, reasoning="Hmm.", form="reasoning")
    chunks = await stream(client)
    assert field(chunks, "reasoning") == "Hmm." and field(chunks, "content") == "You said: hello"


async def test_a_completion_carries_its_reasoning(
    server: LLMServer, client: openai.AsyncOpenAI
) -> None:
    server.script(
        ScriptedReply("Title", reasoning="why"),
        ScriptedReply("Title", reasoning="why", reasoning_as="think"),
    )
    result = await client.chat.completions.create(model="m", messages=TEXT_ONLY)
    message = result.choices[0].message
    assert message.content == "Title" and getattr(message, "reasoning_content", None) == "why"
    result = await client.chat.completions.create(model="m", messages=TEXT_ONLY)
    assert result.choices[0].message.content == "<think>\nwhy\n</think>\n\nTitle"


def test_reasoning_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        ScriptedReply("x", reasoning="y", reasoning_as="thoughts")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ScriptedReply("x", reasoning="y", reasoning_seconds=-1)


# --- images --------------------------------------------------------------------------------------


async def test_the_echo_counts_image_parts(server: LLMServer, client: openai.AsyncOpenAI) -> None:
    assert field(await stream(client, WITH_IMAGE), "content") == (
        "You said: what is wrong here? [1 image]"
    )
    assert message_text({"role": "user", "content": [{"type": "image_url"}] * 2}) == "[2 images]"


async def test_received_image_parts_are_recorded_whole(
    server: LLMServer, client: openai.AsyncOpenAI
) -> None:
    await stream(client, WITH_IMAGE)
    assert server.requests[-1]["messages"] == WITH_IMAGE
    assert image_urls(server.requests[-1]) == [IMAGE_URL]


async def test_the_request_log_can_leave_image_data_out_and_keep_the_last_n() -> None:
    async with LLMServer(record_images=False, keep_requests=2) as server:
        sdk = openai.AsyncOpenAI(base_url=server.base_url, api_key="t", max_retries=0)
        for _ in range(3):
            await stream(sdk, WITH_IMAGE)
        await stream(sdk, TEXT_ONLY)
        await sdk.close()
    assert len(server.requests) == 2 and server.stats.requests == 4
    part = server.requests[0]["messages"][1]["content"][1]
    # The part is still there, as an image part; only its data is gone.
    assert part == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,", "omitted_chars": len(IMAGE_URL) - 22},
    }
    assert server.requests[1]["messages"] == TEXT_ONLY


async def test_without_vision_an_image_part_is_a_400_in_openais_words() -> None:
    async with LLMServer(vision=False) as server:
        server.script("for the text-only request")
        sdk = openai.AsyncOpenAI(base_url=server.base_url, api_key="t", max_retries=0)
        with pytest.raises(openai.BadRequestError) as refused:
            await stream(sdk, WITH_IMAGE)
        assert field(await stream(sdk, TEXT_ONLY), "content") == "for the text-only request"
        await sdk.close()
    error = refused.value
    assert error.status_code == 400 and error.message.endswith(NO_VISION_MESSAGE)
    assert error.body == {
        "message": NO_VISION_MESSAGE,
        "type": "invalid_request_error",
        "param": "messages.[1].content.[1].type",
        "code": None,
    }
    assert len(server.requests) == 2  # the refused request was received, and recorded


async def test_command_line_server_reasons_and_refuses_images() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sandbox.llm_server",
        "--port",
        "0",
        "--reasoning-seconds",
        "0",
        "--reasoning-as",
        "think",
        "--no-vision",
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
        sdk = openai.AsyncOpenAI(base_url=line.decode().split()[-1], api_key="t", max_retries=0)
        try:
            content = field(await stream(sdk), "content")
            with pytest.raises(openai.BadRequestError):
                await stream(sdk, WITH_IMAGE)
        finally:
            await sdk.close()
        assert content.startswith("<think>\n") and content.endswith("</think>\n\nYou said: hello")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
