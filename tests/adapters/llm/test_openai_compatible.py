"""The LLM adapter driving the real openai SDK against the local OpenAI-compatible server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.llm import OpenAICompatibleModel
from adapters.llm.openai_compatible import SSELines
from bridge.config import LLMSettings
from bridge.domain import Role, TokenUsage
from bridge.ports import ChatTurn, CompletionRequest, Delta, Finished, LLMError, StreamEvent
from sandbox.llm_server import Fault, LLMServer, ScriptedReply

REQUEST = CompletionRequest(
    model="test-model", messages=[ChatTurn(Role.USER, "hello")], temperature=0.5
)


@pytest.fixture
async def server() -> AsyncIterator[LLMServer]:
    async with LLMServer() as running:
        yield running


def model_for(server: LLMServer, **overrides: object) -> OpenAICompatibleModel:
    settings = LLMSettings(base_url=server.base_url, api_key="test-key", **overrides)  # type: ignore[arg-type]
    return OpenAICompatibleModel(settings)


async def collect(model: OpenAICompatibleModel, request: CompletionRequest) -> list[StreamEvent]:
    return [event async for event in model.stream(request)]


async def test_stream_yields_deltas_finish_and_usage(server: LLMServer) -> None:
    text = "Streaming works, with punctuation — and “quotes” and\nnew lines."
    server.script(ScriptedReply(text=text))
    model = model_for(server)
    events = await collect(model, REQUEST)
    assert "".join(e.text for e in events if isinstance(e, Delta)) == text
    assert Finished(0, "stop") in events
    usage = [e for e in events if isinstance(e, TokenUsage)]
    assert len(usage) == 1 and usage[0].completion_tokens > 5 and usage[0].prompt_tokens > 0
    body = server.requests[-1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "user", "content": "hello"}]
    assert body["model"] == "test-model" and body["temperature"] == 0.5
    await model.stop()


async def test_n_choices_are_told_apart(server: LLMServer) -> None:
    server.script(ScriptedReply(text=["first choice", "second choice"]))
    model = model_for(server)
    request = CompletionRequest(model="m", messages=REQUEST.messages, temperature=0.1, n=2)
    events = await collect(model, request)
    for choice, expected in enumerate(["first choice", "second choice"]):
        got = "".join(e.text for e in events if isinstance(e, Delta) and e.choice == choice)
        assert got == expected
    await model.stop()


async def test_429_is_retryable_with_the_servers_retry_after(server: LLMServer) -> None:
    server.script(ScriptedReply(text="x", fault=Fault.status(429, retry_after=7)))
    model = model_for(server)
    with pytest.raises(LLMError) as info:
        await collect(model, REQUEST)
    assert info.value.retryable and info.value.retry_after == 7
    assert len(server.requests) == 1  # the SDK's own retries are off: the responder decides
    await model.stop()


async def test_server_errors_are_retryable_client_errors_are_not(server: LLMServer) -> None:
    server.script(
        ScriptedReply(text="x", fault=Fault.status(503)),
        ScriptedReply(text="x", fault=Fault.status(400, message="bad model name")),
    )
    model = model_for(server)
    with pytest.raises(LLMError) as unavailable:
        await collect(model, REQUEST)
    assert unavailable.value.retryable
    with pytest.raises(LLMError) as bad:
        await collect(model, REQUEST)
    assert not bad.value.retryable and "bad model name" in str(bad.value)
    await model.stop()


async def test_a_cut_connection_raises_after_the_partial_text(server: LLMServer) -> None:
    server.script(ScriptedReply(text="one two three four five six", fault=Fault.cut_after(3)))
    model = model_for(server)
    seen: list[str] = []
    with pytest.raises(LLMError) as info:
        async for event in model.stream(REQUEST):
            if isinstance(event, Delta):
                seen.append(event.text)
    assert 1 <= len(seen) <= 3 and info.value.retryable
    await model.stop()


async def test_an_error_event_mid_stream_is_not_retryable(server: LLMServer) -> None:
    server.script(
        ScriptedReply(text="one two three four", fault=Fault.error_after(2, "content filtered"))
    )
    model = model_for(server)
    with pytest.raises(LLMError) as info:
        await collect(model, REQUEST)
    assert "content filtered" in str(info.value) and not info.value.retryable
    await model.stop()


BROKEN_OFF = "the model's stream ended before the reply was finished"


async def test_a_body_that_ends_without_finish_or_done_is_not_a_finished_reply(
    server: LLMServer,
) -> None:
    server.script(ScriptedReply(text="one two three four five", fault=Fault.end_after(3)))
    model = model_for(server)
    seen: list[str] = []
    with pytest.raises(LLMError) as info:
        async for event in model.stream(REQUEST):
            assert not isinstance(event, Finished)
            if isinstance(event, Delta):
                seen.append(event.text)
    # The partial text arrived first (the responder keeps it and shows a notice).
    assert "".join(seen) == "one two three"
    assert str(info.value) == BROKEN_OFF and info.value.retryable
    await model.stop()


async def test_an_empty_event_stream_is_not_an_empty_reply(server: LLMServer) -> None:
    server.script(ScriptedReply(text="never sent", fault=Fault.end_after(0)))
    model = model_for(server)
    with pytest.raises(LLMError) as info:
        await collect(model, REQUEST)
    assert str(info.value) == BROKEN_OFF and info.value.retryable
    await model.stop()


async def test_every_choice_that_wrote_text_must_be_finished(server: LLMServer) -> None:
    # Choice 0 finishes at once; choice 1 has written text when the body ends.
    server.script(ScriptedReply(text=["short", "a longer second choice"], fault=Fault.end_after(2)))
    model = model_for(server)
    request = CompletionRequest(model="m", messages=REQUEST.messages, temperature=0.1, n=2)
    events: list[StreamEvent] = []
    with pytest.raises(LLMError) as info:
        async for event in model.stream(request):
            events.append(event)
    assert Finished(0, "stop") in events and Delta(1, " longer") in events
    assert str(info.value) == BROKEN_OFF and info.value.retryable
    await model.stop()


async def test_finish_reasons_without_done_complete_the_reply(server: LLMServer) -> None:
    server.script(
        ScriptedReply(text="closed politely", send_done=False),
        ScriptedReply(text=["first choice", "second"], send_done=False),
    )
    model = model_for(server)
    events = await collect(model, REQUEST)
    assert "".join(e.text for e in events if isinstance(e, Delta)) == "closed politely"
    assert Finished(0, "stop") in events and isinstance(events[-1], TokenUsage)

    request = CompletionRequest(model="m", messages=REQUEST.messages, temperature=0.1, n=2)
    events = await collect(model, request)
    assert Finished(0, "stop") in events and Finished(1, "stop") in events
    await model.stop()


async def test_a_json_completion_instead_of_a_stream_is_not_retryable(server: LLMServer) -> None:
    server.script(ScriptedReply(text="the whole secret answer", fault=Fault.not_a_stream()))
    model = model_for(server)
    with pytest.raises(LLMError) as info:
        await collect(model, REQUEST)
    message = str(info.value)
    assert not info.value.retryable
    assert "application/json" in message and "event stream" in message
    assert "secret" not in message and "chat.completion" not in message  # never the body
    await model.stop()


async def test_a_proxys_html_page_is_named_by_its_type_not_shown(server: LLMServer) -> None:
    server.script(ScriptedReply(text="x", fault=Fault.not_a_stream("text/html; charset=utf-8")))
    model = model_for(server)
    with pytest.raises(LLMError) as info:
        await collect(model, REQUEST)
    message = str(info.value)
    assert not info.value.retryable and "text/html" in message
    assert "<" not in message and "password" not in message and "Sign in" not in message
    assert len(message) < 200
    await model.stop()


async def test_nul_and_lone_surrogates_are_cleaned_from_deltas(server: LLMServer) -> None:
    server.script(ScriptedReply(chunks=["He\x00llo", " wor\ud800ld", "\x00", " caf\udfffé 😀"]))
    model = model_for(server)
    events = await collect(model, REQUEST)
    deltas = [e.text for e in events if isinstance(e, Delta)]
    assert "".join(deltas) == "Hello wor\ufffdld caf\ufffdé 😀"
    assert "" not in deltas  # a delta that was only a NUL is dropped, not sent empty
    for text in deltas:
        text.encode("utf-8")  # storable and sendable: raises on a lone surrogate
    assert Finished(0, "stop") in events
    await model.stop()


async def test_an_error_events_message_is_cleaned(server: LLMServer) -> None:
    server.script(ScriptedReply(text="one two", fault=Fault.error_after(1, "bad\x00 \ud800input")))
    model = model_for(server)
    with pytest.raises(LLMError) as info:
        await collect(model, REQUEST)
    assert str(info.value) == "bad \ufffdinput" and not info.value.retryable
    await model.stop()


async def test_unreachable_server_is_a_retryable_error() -> None:
    settings = LLMSettings(base_url="http://127.0.0.1:9/v1", api_key="k", request_timeout=2)  # type: ignore[arg-type]
    model = OpenAICompatibleModel(settings)
    with pytest.raises(LLMError) as info:
        await collect(model, REQUEST)
    assert info.value.retryable and "cannot reach" in str(info.value)
    # The transport's words, not the SDK's "Request timed out." for a refused connection.
    assert "timed out" not in str(info.value) and "127.0.0.1:9" in str(info.value)
    await model.stop()


async def test_complete_returns_the_text(server: LLMServer) -> None:
    server.script(ScriptedReply(text="A Tidy Title"))
    model = model_for(server)
    assert await model.complete(REQUEST) == "A Tidy Title"
    assert server.requests[-1].get("stream") in (None, False)
    await model.stop()


async def test_complete_cleans_the_text(server: LLMServer) -> None:
    server.script(ScriptedReply(text="A\x00 Title \ud800"))
    model = model_for(server)
    assert await model.complete(REQUEST) == "A Title \ufffd"
    await model.stop()


def test_sse_lines_survive_any_split_of_the_byte_stream() -> None:
    """Network reads cut anywhere: inside a line, inside a CRLF, inside a multi-byte character."""
    body = 'data: {"a": "é"}\r\n\r\n: keep-alive\rdata: [DONE]\n\ndata: tail'.encode()
    expected = [b'data: {"a": "\xc3\xa9"}', b"", b": keep-alive", b"data: [DONE]", b""]
    for cut in range(len(body) + 1):
        for second in range(cut, len(body) + 1):
            lines = SSELines()
            got = [*lines.feed(body[:cut]), *lines.feed(body[cut:second])]
            got += lines.feed(body[second:])
            assert got == expected, (cut, second)
            assert lines.end() == b"data: tail"
            assert lines.end() == b""
