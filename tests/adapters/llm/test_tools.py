"""Tools through the LLM adapter: wire names, tool turns on the wire, streamed calls assembled,
and endpoints that refuse tools; the real openai SDK against the local server."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.llm import OpenAICompatibleModel
from adapters.llm.sse import StreamDecoder
from adapters.llm.tool_calls import MAX_ARGUMENTS_CHARS
from adapters.llm.tools import ToolNames, refuses_tools, wire_name
from bridge.config import LLMSettings
from bridge.domain import Role, TokenUsage
from bridge.ports import (
    ChatTurn,
    CompletionRequest,
    Delta,
    Finished,
    ImagePart,
    LLMError,
    StreamEvent,
    ToolCall,
    ToolCalls,
    ToolSpec,
)
from sandbox.llm_server import Fault, LLMServer, ScriptedReply, ScriptedToolCall

CALC = ToolSpec(
    "sandbox.calculate",
    "Evaluate an arithmetic expression.",
    {
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
    },
)
NOW = ToolSpec("sandbox.now", "The current date and time.", {"type": "object", "properties": {}})
TOOLS = (CALC, NOW)
ASK = [ChatTurn(Role.SYSTEM, "Be brief."), ChatTurn(Role.USER, "what is 17*23?")]
PNG = ImagePart("image/png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)))


def asking(
    turns: list[ChatTurn] | None = None, *, tools: tuple[ToolSpec, ...] = TOOLS, model: str = "m"
) -> CompletionRequest:
    return CompletionRequest(model=model, messages=turns or ASK, temperature=0.2, tools=tools)


@pytest.fixture
async def server() -> AsyncIterator[LLMServer]:
    async with LLMServer() as running:
        yield running


@pytest.fixture
async def model(server: LLMServer) -> AsyncIterator[OpenAICompatibleModel]:
    llm = OpenAICompatibleModel(LLMSettings(base_url=server.base_url, api_key="k"))  # type: ignore[arg-type]
    yield llm
    await llm.stop()


async def collect(model: OpenAICompatibleModel, request: CompletionRequest) -> list[StreamEvent]:
    return [event async for event in model.stream(request)]


def calls_of(events: list[StreamEvent], choice: int = 0) -> tuple[ToolCall, ...]:
    found = [e for e in events if isinstance(e, ToolCalls) and e.choice == choice]
    assert len(found) == 1, events
    return found[0].calls


def text(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, Delta))


def wire_functions(body: dict[str, Any]) -> list[str]:
    return [tool["function"]["name"] for tool in body["tools"]]


# --- wire names ------------------------------------------------------------------------------


def test_wire_names_are_what_the_api_accepts() -> None:
    assert wire_name("docs.search") == "docs__search"
    assert wire_name("my-server.get_weather") == "my-server__get_weather"
    assert wire_name("a b/c:ç.d€") == "a_b_c____d_"
    assert wire_name("x" * 80) == "x" * 64
    assert wire_name("s." + "t" * 70) == "s__" + "t" * 61
    assert wire_name("") == "_"


def test_colliding_wire_names_get_a_suffix_within_64_characters() -> None:
    long_a, long_b = "s." + "t" * 70 + "a", "s." + "t" * 70 + "b"
    specs = [
        ToolSpec(name, "", {}) for name in ("a.b", "a__b", "a:_b", "a.b", long_a, long_b, "a__b_2")
    ]
    names = ToolNames(specs)
    assert names.wire("a.b") == "a__b"
    assert names.wire("a__b") == "a__b_2"
    assert names.wire("a:_b") == "a__b_3"
    assert names.wire(long_a) == "s__" + "t" * 61
    assert names.wire(long_b) == "s__" + "t" * 59 + "_2" and len(names.wire(long_b)) == 64
    assert names.wire("a__b_2") == "a__b_2_2"  # its plain name was taken by a suffix
    for qualified in ("a.b", "a__b", "a:_b", long_a, long_b, "a__b_2"):
        assert names.qualified(names.wire(qualified)) == qualified
    assert names.qualified("made_up") == "made_up"  # unknown: passed through unchanged
    assert names.wire("gone.tool") == "gone__tool"  # a tool of the history not offered now


# --- the request on the wire -----------------------------------------------------------------


async def test_tools_go_as_functions_without_tool_choice(
    server: LLMServer, model: OpenAICompatibleModel
) -> None:
    server.script("fine")
    await collect(model, asking())
    body = server.requests[-1]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "sandbox__calculate",
                "description": CALC.description,
                "parameters": dict(CALC.parameters),
            },
        },
        {
            "type": "function",
            "function": {
                "name": "sandbox__now",
                "description": NOW.description,
                "parameters": {"type": "object", "properties": {}},
            },
        },
    ]
    assert "tool_choice" not in body


async def test_tool_turns_go_as_assistant_calls_and_tool_messages(
    server: LLMServer, model: OpenAICompatibleModel
) -> None:
    calls = (
        ToolCall("call_a", "sandbox.calculate", '{"expression": "17*23"}'),
        ToolCall("call_b", "sandbox.now", "{not json"),
    )
    turns = [
        *ASK,
        ChatTurn(Role.ASSISTANT, "", tool_calls=calls),
        ChatTurn(Role.TOOL, "391", tool_call_id="call_a"),
        ChatTurn(Role.TOOL, "Error: the arguments are not JSON", tool_call_id="call_b"),
        ChatTurn(Role.ASSISTANT, "Let me check again.", tool_calls=calls[:1]),
        ChatTurn(Role.TOOL, "391", tool_call_id="call_a"),
    ]
    server.script("17*23 = 391")
    events = await collect(model, asking(turns))
    assert text(events) == "17*23 = 391"
    assert server.requests[-1]["messages"][2:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "sandbox__calculate", "arguments": calls[0].arguments},
                },
                # Malformed arguments go as "{}": local servers refuse a history that has any.
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "sandbox__now", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "391"},
        {"role": "tool", "tool_call_id": "call_b", "content": "Error: the arguments are not JSON"},
        {
            "role": "assistant",
            "content": "Let me check again.",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "sandbox__calculate", "arguments": calls[0].arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "391"},
    ]


async def test_without_tools_the_tool_turns_stay_off_the_wire(
    server: LLMServer, model: OpenAICompatibleModel
) -> None:
    turns = [
        *ASK,
        ChatTurn(Role.ASSISTANT, "", tool_calls=(ToolCall("c1", "sandbox.calculate", "{}"),)),
        ChatTurn(Role.TOOL, "391", tool_call_id="c1"),
        ChatTurn(Role.ASSISTANT, "Checking.", tool_calls=(ToolCall("c2", "sandbox.now", "{}"),)),
        ChatTurn(Role.TOOL, "12:00", tool_call_id="c2"),
        ChatTurn(Role.USER, "thanks", images=(PNG,)),
    ]
    server.script("ok", "ok")
    await collect(model, asking(turns, tools=()))
    sent = server.requests[-1]
    assert "tools" not in sent
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
    assert sent["messages"][2] == {"role": "assistant", "content": "Checking."}
    assert sent["messages"][3]["content"][1]["type"] == "image_url"  # images as ever
    assert "tool_calls" not in json.dumps(sent)

    assert await model.complete(asking(turns)) == "ok"  # titles never send tools
    assert "tools" not in server.requests[-1]
    assert len(server.requests[-1]["messages"]) == 4


# --- streamed calls --------------------------------------------------------------------------


async def test_one_call_in_fragments_is_assembled_before_the_finish(
    server: LLMServer, model: OpenAICompatibleModel
) -> None:
    arguments = '{"expression": "17*23"}'
    fragments = ('{"expr', 'ession"', ': "1', "7*2", '3"}')
    server.script(
        ScriptedReply(
            tool_calls=(
                ScriptedToolCall("sandbox__calculate", arguments, id="call_x", fragments=fragments),
            )
        )
    )
    events = await collect(model, asking())
    assert events[:2] == [
        ToolCalls(0, (ToolCall("call_x", "sandbox.calculate", arguments),)),
        Finished(0, "tool_calls"),
    ]
    assert isinstance(events[-1], TokenUsage) and len(events) == 3


async def test_parallel_calls_and_text_before_them(
    server: LLMServer, model: OpenAICompatibleModel
) -> None:
    server.script(
        ScriptedReply(
            text="Let me compute that.",
            tool_calls=(
                ScriptedToolCall("sandbox__calculate", '{"expression": "1+1"}'),
                ScriptedToolCall("sandbox__now", "{}", id="call_now"),
                ScriptedToolCall("not_offered", '{"q": 1}'),
            ),
        )
    )
    events = await collect(model, asking())
    assert text(events) == "Let me compute that."
    calls = calls_of(events)
    assert [(c.name, c.arguments) for c in calls] == [
        ("sandbox.calculate", '{"expression": "1+1"}'),
        ("sandbox.now", "{}"),
        ("not_offered", '{"q": 1}'),  # unknown: the core tells the model
    ]
    assert calls[1].id == "call_now" and len({c.id for c in calls}) == 3
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("ToolCalls") == kinds.index("Finished") - 1
    assert kinds.index("Delta") < kinds.index("ToolCalls")


async def test_whole_calls_in_one_chunk_and_repeated_heads_are_not_doubled(
    server: LLMServer, model: OpenAICompatibleModel
) -> None:
    arguments = '{"expression": "(2+3)*4"}'
    server.script(
        ScriptedReply(
            tool_calls=(
                ScriptedToolCall("sandbox__calculate", arguments, id="w1", whole=True),
                ScriptedToolCall("sandbox__calculate", arguments, id="r1", repeat_head=True),
            )
        )
    )
    calls = calls_of(await collect(model, asking()))
    assert calls == (
        ToolCall("w1", "sandbox.calculate", arguments),
        ToolCall("r1", "sandbox.calculate", arguments),
    )


async def test_calls_finished_with_stop_still_count(
    server: LLMServer, model: OpenAICompatibleModel
) -> None:
    call = ScriptedToolCall("sandbox__now", "{}", id="c")
    server.script(ScriptedReply(tool_calls=(call,), finish_reason="stop"))
    events = await collect(model, asking())
    assert events[:2] == [ToolCalls(0, (ToolCall("c", "sandbox.now", "{}"),)), Finished(0, "stop")]


async def test_calls_without_ids_get_unique_ones(
    server: LLMServer, model: OpenAICompatibleModel
) -> None:
    no_id = ScriptedToolCall("sandbox__now", "", id="")
    server.script(ScriptedReply(tool_calls=(no_id, no_id)), ScriptedReply(tool_calls=(no_id,)))
    first = calls_of(await collect(model, asking()))
    second = calls_of(await collect(model, asking()))
    ids = [c.id for c in (*first, *second)]
    assert all(i.startswith("call_") for i in ids) and len(set(ids)) == 3
    assert [c.arguments for c in first] == ["{}", "{}"]  # no argument text: no arguments


async def test_each_choice_gets_its_calls(server: LLMServer, model: OpenAICompatibleModel) -> None:
    server.script(ScriptedReply(tool_calls=(ScriptedToolCall("sandbox__now"),)))
    request = CompletionRequest(model="m", messages=ASK, temperature=0.2, n=2, tools=TOOLS)
    events = await collect(model, request)
    for choice in (0, 1):
        assert [c.name for c in calls_of(events, choice)] == ["sandbox.now"]
        assert Finished(choice, "tool_calls") in events


async def test_a_body_that_ends_mid_call_is_broken_not_a_call(
    server: LLMServer, model: OpenAICompatibleModel
) -> None:
    call = ScriptedToolCall(
        "sandbox__calculate", '{"expression": "1+1"}', fragments=('{"exp', 'ression": "1+1"}')
    )
    server.script(ScriptedReply(tool_calls=(call,), fault=Fault.end_after(2)))
    events: list[StreamEvent] = []
    with pytest.raises(LLMError) as info:
        async for event in model.stream(asking()):
            events.append(event)
    assert info.value.retryable and events == []


async def test_arguments_past_the_cap_stop_the_stream(
    server: LLMServer, model: OpenAICompatibleModel
) -> None:
    piece = "x" * 100_000
    huge = '{"a": "' + piece * 10 + '"}'
    fragments = ('{"a": "', *[piece] * 10, '"}')
    assert len(huge) > MAX_ARGUMENTS_CHARS
    server.script(
        ScriptedReply(
            tool_calls=(ScriptedToolCall("sandbox__calculate", huge, fragments=fragments),)
        )
    )
    with pytest.raises(LLMError) as info:
        await collect(model, asking())
    assert not info.value.retryable and "1,000,000" in str(info.value)
    assert "sandbox__calculate" in str(info.value)


# --- the decoder's quirks, fed SSE lines as servers send them -------------------------------


def decode(*chunks: dict[str, Any], names: ToolNames | None = None) -> list[StreamEvent]:
    decoder = StreamDecoder(names)
    events: list[StreamEvent] = []
    for chunk in chunks:
        got = decoder.line_events(b"data: " + json.dumps(chunk).encode())
        assert got is not None
        events += got
    assert decoder.line_events(b"data: [DONE]") is None
    return events + decoder.end_events()


def tool_chunk(*fragments: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    delta = {"tool_calls": list(fragments)} if fragments else {}
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_calls_numbered_alike_or_unnumbered_are_told_apart_by_their_ids() -> None:
    events = decode(
        tool_chunk({"index": 0, "id": "a", "function": {"name": "f", "arguments": "{}"}}),
        tool_chunk({"index": 0, "id": "b", "function": {"name": "g", "arguments": '{"x"'}}),
        tool_chunk({"index": 0, "function": {"arguments": ": 1}"}}),
        tool_chunk({"id": "c", "function": {"name": "h", "arguments": "{"}}),
        tool_chunk({"function": {"arguments": "}"}}),
        tool_chunk(finish="tool_calls"),
    )
    assert events == [
        ToolCalls(
            0, (ToolCall("a", "f", "{}"), ToolCall("b", "g", '{"x": 1}'), ToolCall("c", "h", "{}"))
        ),
        Finished(0, "tool_calls"),
    ]


def test_calls_with_done_but_no_finish_reason_are_still_given() -> None:
    names = ToolNames([CALC])
    events = decode(
        tool_chunk(
            {"index": 0, "id": "a", "function": {"name": "sandbox__calculate", "arguments": {}}}
        ),
        names=names,
    )
    assert events == [ToolCalls(0, (ToolCall("a", "sandbox.calculate", "{}"),))]


def test_an_id_repeated_within_a_turn_is_replaced() -> None:
    events = decode(
        tool_chunk({"index": 0, "id": "same", "function": {"name": "f", "arguments": "{}"}}),
        tool_chunk({"index": 1, "id": "same", "function": {"name": "g", "arguments": "{}"}}),
        tool_chunk(finish="tool_calls"),
    )
    first, second = calls_of(events)
    assert first.id == "same" and second.id.startswith("call_") and second.name == "g"


def test_plain_text_deltas_never_build_tool_state() -> None:
    decoder = StreamDecoder(ToolNames(TOOLS))
    line = b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}'
    assert decoder.line_events(line) == [Delta(0, "hi")]
    assert decoder._calls is None


# --- endpoints that refuse tools -------------------------------------------------------------


REFUSALS = [
    '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
    "registry.ollama.ai/library/gemma:2b does not support tools",
    "tools param requires --jinja flag",
    "tools is not supported",
    "This model does not support tools",
    "Function calling is not supported for this model.",
    "function calling is not enabled for this model",
    "Unrecognized request argument supplied: tools",
    "Unsupported parameter: 'tools' is not supported with this model.",
    "Model does not support tool use",
    "Tool use is not supported by this model",
    "Tool calling is not supported for the loaded model",
]
NOT_REFUSALS = [
    "Invalid schema for function 'sandbox__calculate': 'format' is not supported",
    "Invalid 'tools[0].function.name': string does not match pattern.",
    "An assistant message with 'tool_calls' must be followed by tool messages responding to "
    "each 'tool_call_id'.",
    "tool_choice 'required' is not supported",
    "parallel_tool_calls is not supported",
    "Invalid content type. image_url is only supported by certain models.",
    "This model's maximum context length is 8192 tokens.",
]


@pytest.mark.parametrize("message", REFUSALS)
def test_refusals_are_recognised(message: str) -> None:
    assert refuses_tools(message)


@pytest.mark.parametrize("message", NOT_REFUSALS)
def test_other_errors_are_not_refusals(message: str) -> None:
    assert not refuses_tools(message)


async def test_a_model_that_refuses_tools_is_asked_again_without_them(
    server: LLMServer, model: OpenAICompatibleModel, caplog: pytest.LogCaptureFixture
) -> None:
    turns = [
        *ASK,
        ChatTurn(Role.ASSISTANT, "", tool_calls=(ToolCall("c1", "sandbox.calculate", "{}"),)),
        ChatTurn(Role.TOOL, "391", tool_call_id="c1"),
        ChatTurn(Role.USER, "and now?"),
    ]
    request = asking(turns, model="local-no-tools")
    with caplog.at_level(logging.WARNING, logger="adapters.llm"):
        events = await collect(model, request)
        assert text(events) == "You said: and now?"
        assert model.tools_refused("local-no-tools") and not model.tools_refused("m")
        first, second = server.requests
        assert "tools" in first and "tools" not in second
        assert [m["role"] for m in second["messages"]] == ["system", "user", "user"]

        events = await collect(model, request)  # known: no tools from the start
        assert text(events) == "You said: and now?" and len(server.requests) == 3
        assert "tools" not in server.requests[-1]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "'local-no-tools' does not support tools" in message
    assert "tools is not supported by this model" in message
    assert "go without them from now on" in message


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_refusals_of_each_kind_are_retried(
    server: LLMServer, model: OpenAICompatibleModel, status: int
) -> None:
    server.script(
        ScriptedReply(fault=Fault.status(status, message="tools param requires --jinja flag")),
        "answered without tools",
    )
    events = await collect(model, asking())
    assert text(events) == "answered without tools" and model.tools_refused("m")
    assert "tools" in server.requests[0] and "tools" not in server.requests[1]


async def test_other_errors_of_a_request_with_tools_are_not_retried(
    server: LLMServer, model: OpenAICompatibleModel
) -> None:
    server.script(
        ScriptedReply(fault=Fault.status(500, message="tools is not supported")),
        ScriptedReply(fault=Fault.status(400, message="Invalid 'tools[0].function.name'")),
    )
    for retryable in (True, False):
        with pytest.raises(LLMError) as info:
            await collect(model, asking())
        assert info.value.retryable is retryable
    assert len(server.requests) == 2 and not model.tools_refused("m")


async def test_images_and_tools_both_refused_in_one_request() -> None:
    async with LLMServer(vision=False) as server:
        settings = LLMSettings(base_url=server.base_url, api_key="k", vision="auto")  # type: ignore[arg-type]
        model = OpenAICompatibleModel(settings)
        turns = [ChatTurn(Role.USER, "what is this?", images=(PNG,))]
        events = await collect(model, asking(turns, model="no-tools-vlm"))
        assert text(events).startswith("You said: what is this?")
        assert "image not sent" in text(events)
        assert len(server.requests) == 3
        last = server.requests[-1]
        assert "tools" not in last and isinstance(last["messages"][0]["content"], str)
        assert model.tools_refused("no-tools-vlm")
        await model.stop()
