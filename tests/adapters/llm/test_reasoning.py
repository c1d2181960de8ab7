"""A reasoning model's thinking through the LLM adapter: never reply text, always Reasoning events.

Real HTTP against the local server, in each form servers send it: `delta.reasoning_content`,
`delta.reasoning`, and `<think>` tags inline in the content.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.llm import OpenAICompatibleModel
from adapters.llm.reasoning import ThinkBlocks, strip_think_blocks
from bridge.config import LLMSettings
from bridge.domain import Role, TokenUsage
from bridge.ports import (
    ChatTurn,
    CompletionRequest,
    Delta,
    Finished,
    LLMError,
    Reasoning,
    StreamEvent,
)
from sandbox.llm_server import Fault, LLMServer, ScriptedReply
from sandbox.llm_server.script import ReasoningForm

REQUEST = CompletionRequest(model="r1", messages=[ChatTurn(Role.USER, "2+2?")], temperature=0.5)
THOUGHT = "The user asks for 2+2. Adding two and two gives four."
ANSWER = "2 + 2 = 4."


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


def answer(events: list[StreamEvent], choice: int = 0) -> str:
    return "".join(e.text for e in events if isinstance(e, Delta) and e.choice == choice)


def reasoning(events: list[StreamEvent], choice: int = 0) -> str:
    return "".join(e.text for e in events if isinstance(e, Reasoning) and e.choice == choice)


@pytest.mark.parametrize("form", ["reasoning_content", "reasoning", "think"])
async def test_reasoning_in_each_form_is_never_reply_text(
    server: LLMServer, model: OpenAICompatibleModel, form: ReasoningForm
) -> None:
    server.script(ScriptedReply(text=ANSWER, reasoning=THOUGHT, reasoning_as=form))
    events = await collect(model, REQUEST)
    assert answer(events) == ANSWER  # no tag, no thought, no blank lines after the block
    assert reasoning(events).strip() == THOUGHT
    # All of the thinking comes before the first word of the answer, then the finish and usage.
    kinds = [type(e) for e in events]
    first_delta = kinds.index(Delta)
    assert Reasoning in kinds[:first_delta] and Reasoning not in kinds[first_delta:]
    assert events[-2] == Finished(0, "stop") and isinstance(events[-1], TokenUsage)


@pytest.mark.parametrize("form", ["reasoning_content", "reasoning", "think"])
async def test_a_choice_that_only_reasoned_and_finished_is_a_finished_reply(
    server: LLMServer, model: OpenAICompatibleModel, form: ReasoningForm
) -> None:
    # Without [DONE], the finish reasons alone say whether the reply is complete.
    server.script(ScriptedReply(text="", reasoning=THOUGHT, reasoning_as=form, send_done=False))
    events = await collect(model, REQUEST)
    assert answer(events) == "" and reasoning(events).strip() == THOUGHT
    assert Finished(0, "stop") in events


async def test_reasoning_that_breaks_off_is_not_a_finished_reply(
    server: LLMServer, model: OpenAICompatibleModel
) -> None:
    server.script(ScriptedReply(text="never", reasoning=THOUGHT, fault=Fault.end_after(3)))
    events: list[StreamEvent] = []
    with pytest.raises(LLMError) as info:
        async for event in model.stream(REQUEST):
            events.append(event)
    assert info.value.retryable and "ended before the reply was finished" in str(info.value)
    assert reasoning(events) and not answer(events)


async def test_think_tags_cut_across_deltas(
    server: LLMServer, model: OpenAICompatibleModel
) -> None:
    chunks = [
        "<thi",
        "nk>Carry",
        " the one",
        "…</th",
        "ink",
        ">",
        "\n",
        "\nIt is 4",
        " <",
        "3",
        " <",
    ]
    server.script(ScriptedReply(chunks=chunks))
    events = await collect(model, REQUEST)
    assert reasoning(events) == "Carry the one…"
    # A "<" that began no tag is text, also when it is the last thing the model wrote.
    assert answer(events) == "It is 4 <3 <"
    assert events[-2] == Finished(0, "stop")


async def test_a_think_block_that_never_closes_is_reasoning_to_the_end(
    server: LLMServer, model: OpenAICompatibleModel
) -> None:
    server.script(ScriptedReply(chunks=["<think>", "Hmm", ", what if", " </thin"]))
    events = await collect(model, REQUEST)
    assert answer(events) == ""
    assert reasoning(events) == "Hmm, what if </thin"
    assert Finished(0, "stop") in events


async def test_once_the_answer_began_think_tags_and_plain_markup_are_its_text(
    server: LLMServer, model: OpenAICompatibleModel
) -> None:
    # Models reason before they answer: an answer that writes about the tag keeps every word.
    chunks = ["Use <b>bold</b>", " and a < b.", " In R1 the <think>", " tag wraps", " it. Done."]
    server.script(ScriptedReply(chunks=chunks))
    events = await collect(model, REQUEST)
    assert answer(events) == "Use <b>bold</b> and a < b. In R1 the <think> tag wraps it. Done."
    assert reasoning(events) == ""


async def test_a_think_block_after_leading_blank_lines_is_still_reasoning(
    server: LLMServer, model: OpenAICompatibleModel
) -> None:
    server.script(ScriptedReply(chunks=["\n", "<think>plan", "</think>\n\n", "Answer."]))
    events = await collect(model, REQUEST)
    assert answer(events).strip() == "Answer."
    assert reasoning(events) == "plan"


async def test_reasoning_of_n_choices_is_told_apart(
    server: LLMServer, model: OpenAICompatibleModel
) -> None:
    server.script(ScriptedReply(text=["first", "second"], reasoning="hmm", reasoning_as="think"))
    request = CompletionRequest(model="m", messages=REQUEST.messages, temperature=0.1, n=2)
    events = await collect(model, request)
    assert (answer(events, 0), answer(events, 1)) == ("first", "second")
    assert reasoning(events, 0).strip() == reasoning(events, 1).strip() == "hmm"


async def test_reasoning_is_cleaned_like_text(
    server: LLMServer, model: OpenAICompatibleModel
) -> None:
    server.script(ScriptedReply(text="ok", reasoning="bad\x00 \ud800byte"))
    events = await collect(model, REQUEST)
    assert reasoning(events) == "bad \ufffdbyte"


@pytest.mark.parametrize("form", ["reasoning_content", "think"])
async def test_complete_returns_the_answer_without_the_thinking(
    server: LLMServer, model: OpenAICompatibleModel, form: ReasoningForm
) -> None:
    server.script(ScriptedReply(text="A Tidy Title", reasoning=THOUGHT, reasoning_as=form))
    assert await model.complete(REQUEST) == "A Tidy Title"


def test_think_blocks_survive_any_split_of_the_content() -> None:
    text = "<think>a < b</think>\n\nx <thinking> y</think"
    for cut in range(len(text) + 1):
        for second in range(cut, len(text) + 1):
            blocks, events = ThinkBlocks(), list[StreamEvent]()
            for piece in (text[:cut], text[cut:second], text[second:]):
                if piece:
                    blocks.feed(0, piece, events)
            blocks.end(0, events)
            assert reasoning(events) == "a < b", (cut, second)
            assert answer(events) == "x <thinking> y</think", (cut, second)


def test_strip_think_blocks() -> None:
    assert strip_think_blocks("plain") == "plain"
    assert strip_think_blocks("<think>why</think>\n\nTitle") == "Title"
    assert strip_think_blocks("<think>never closed") == ""
