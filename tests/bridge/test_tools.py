"""The tool loop in the responder: rounds, parallel calls, failures, limits, secrets, progress.

In-memory ports on a virtual clock; the real MCP servers, the LLM wire format and the platforms'
progress are tested in tests/adapters and tests/integration.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from bridge.context import estimate_tokens
from bridge.controls import ReplyControls
from bridge.domain import ChatKey, InboundMessage, MessageStatus, Role
from bridge.ports import (
    Delta,
    Finished,
    TokenUsage,
    ToolCall,
    ToolCalls,
    ToolFailed,
    ToolSpec,
)
from bridge.redaction import Redactor
from bridge.responder import Responder, ResponderSettings
from bridge.scheduler import EditScheduler
from bridge.tools.loop import ToolLoopSettings, Tools
from sandbox.memory_platform import RecordingSurface
from tests.fakes import MemoryStore, Script, ScriptedLLM
from tests.virtual_time import run_virtual

KEY = ChatKey("test", "W1", "C1", "T1")
SETTINGS = ResponderSettings(
    model="m", system_prompt="", titles=False, idle_timeout=30.0, tools=("*",)
)


class FakeToolBox:
    """Tools with canned results and delays; records every call and how many ran at once."""

    def __init__(self, **tools: Any) -> None:
        # name -> result text, an exception to raise, or (delay, result)
        self.tools = tools
        self.calls: list[tuple[str, Mapping[str, Any]]] = []
        self.running = 0
        self.most_at_once = 0
        self.cancelled: list[str] = []

    def available(self, selection: Sequence[str]) -> tuple[ToolSpec, ...]:
        chosen = []
        for name in self.tools:
            server = name.split(".")[0]
            if "*" in selection or f"{server}.*" in selection or name in selection:
                chosen.append(ToolSpec(name, f"the {name} tool", {"type": "object"}))
        return tuple(chosen)

    async def call(self, name: str, arguments: Mapping[str, Any]) -> str:
        self.calls.append((name, arguments))
        result = self.tools[name]
        delay = 0.0
        if isinstance(result, tuple):
            delay, result = result
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            if delay:
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self.cancelled.append(name)
            raise
        finally:
            self.running -= 1
        if isinstance(result, BaseException):
            raise result
        return str(result)


def calling(*calls: tuple[str, dict[str, Any] | str], text: str = "") -> Script:
    """A model turn that asks for these tools (after `text`, if any)."""
    steps: list[tuple[float, Any]] = [(0.0, Delta(0, text))] if text else []
    made = tuple(
        ToolCall(f"call_{i}", name, args if isinstance(args, str) else json.dumps(args))
        for i, (name, args) in enumerate(calls)
    )
    steps += [(0.05, ToolCalls(0, made)), (0.0, Finished(0, "tool_calls"))]
    steps.append((0.0, TokenUsage(10, 5)))
    return Script(steps)


def build(
    llm: ScriptedLLM,
    toolbox: FakeToolBox,
    *,
    secrets: Sequence[str] = (),
    loop: ToolLoopSettings | None = None,
    **overrides: Any,
) -> tuple[Responder, MemoryStore]:
    store = MemoryStore()
    tools = Tools(toolbox, loop or ToolLoopSettings(), Redactor(secrets))
    responder = Responder(
        store=store,
        llm=llm,
        scheduler=EditScheduler(interval=1.0),
        settings=replace(SETTINGS, **overrides),
        controls=ReplyControls(store=store),
        tools=tools,
    )
    return responder, store


def message(text: str, event: str, author: str = "U1") -> InboundMessage:
    return InboundMessage(event, KEY, author, text, f"m-{event}")


def test_one_tool_call_its_result_goes_back_and_the_answer_streams_with_a_footer() -> None:
    async def scenario() -> None:
        box = FakeToolBox(**{"clock.now": "2026-12-03 11:00 UTC"})
        llm = ScriptedLLM(
            calling(("clock.now", {"zone": "UTC"}), text="Let me look."),
            Script.text("It is 11:00."),
        )
        responder, store = build(llm, box)
        surface = RecordingSurface()
        report = await responder.handle("test", message("what time is it?", "e1"), surface)
        assert report is not None and report.status is MessageStatus.COMPLETE
        assert box.calls == [("clock.now", {"zone": "UTC"})]
        first, second = llm.requests
        assert [t.name for t in first.tools] == ["clock.now"]
        # The second request carries the call (with the text written before it) and its result.
        calls_turn, result_turn = second.messages[-2:]
        assert calls_turn.role is Role.ASSISTANT and calls_turn.content == "Let me look."
        assert [c.name for c in calls_turn.tool_calls] == ["clock.now"]
        assert result_turn.role is Role.TOOL and result_turn.tool_call_id == "call_0"
        assert result_turn.content == "2026-12-03 11:00 UTC"
        shown = report.texts[0]
        assert shown.startswith("Let me look.\n\nIt is 11:00.")
        assert shown.endswith("🔧 _Used `clock.now`_")
        # Both rounds' tokens count.
        assert report.usage is not None and report.usage.completion_tokens > 5
        reply = store.replies()[0]
        assert reply.metadata["tools"]["rounds"] == 1
        assert reply.metadata["tools"]["used"] == ["clock.now"]
        kinds = [(m.role, m.content) for m in store.rows.values() if m.reply_to_id is not None]
        assert (Role.TOOL, "2026-12-03 11:00 UTC") in kinds

    run_virtual(scenario())


def test_two_calls_in_one_turn_run_side_by_side() -> None:
    async def scenario() -> None:
        box = FakeToolBox(**{"a.slow": (3.0, "A"), "b.slow": (3.0, "B")})
        llm = ScriptedLLM(calling(("a.slow", {}), ("b.slow", {})), Script.text("both done"))
        responder, store = build(llm, box)
        loop = asyncio.get_running_loop()
        began = loop.time()
        report = await responder.handle("test", message("go", "e1"), RecordingSurface())
        assert report is not None and report.status is MessageStatus.COMPLETE
        assert box.most_at_once == 2
        assert loop.time() - began < 5.0  # 3 s each, side by side (virtual clock: exact)
        results = [t.content for t in llm.requests[1].messages if t.role is Role.TOOL]
        assert results == ["A", "B"]  # in call order

    run_virtual(scenario())


def test_a_failed_or_timed_out_tool_is_told_to_the_model_and_the_reply_goes_on() -> None:
    async def scenario() -> None:
        box = FakeToolBox(
            **{
                "web.fetch": ToolFailed("timed out after 10 s", timed_out=True),
                "web.boom": RuntimeError("adapter bug"),
            }
        )
        llm = ScriptedLLM(calling(("web.fetch", {}), ("web.boom", {})), Script.text("sorry"))
        responder, _ = build(llm, box)
        surface = RecordingSurface()
        report = await responder.handle("test", message("fetch it", "e1"), surface)
        assert report is not None and report.status is MessageStatus.COMPLETE
        results = [t.content for t in llm.requests[1].messages if t.role is Role.TOOL]
        assert results[0] == "Error: timed out after 10 s"
        assert results[1].startswith("Error: the tool could not be run")
        ended = surface.tool_activity[-1]
        assert [a.status for a in ended] == ["error", "error"]
        assert "timed out" in ended[0].detail

    run_virtual(scenario())


def test_bad_arguments_and_unknown_tools_are_answered_without_calling_anything() -> None:
    async def scenario() -> None:
        box = FakeToolBox(**{"calc.add": "3"})
        llm = ScriptedLLM(
            calling(("calc.add", "{not json"), ("calc.nope", {}), ("calc.add", "[1, 2]")),
            Script.text("ok"),
        )
        responder, _ = build(llm, box)
        await responder.handle("test", message("add", "e1"), RecordingSurface())
        assert box.calls == []
        results = [t.content for t in llm.requests[1].messages if t.role is Role.TOOL]
        assert "not valid JSON" in results[0]
        assert "no tool named 'calc.nope'" in results[1]
        assert "must be a JSON object" in results[2]

    run_virtual(scenario())


def test_max_tool_rounds_then_the_model_answers_without_tools() -> None:
    async def scenario() -> None:
        box = FakeToolBox(**{"x.again": "more"})
        llm = ScriptedLLM(*(calling(("x.again", {})) for _ in range(3)), Script.text("final"))
        responder, store = build(llm, box, loop=ToolLoopSettings(max_rounds=3))
        report = await responder.handle("test", message("loop", "e1"), RecordingSurface())
        assert report is not None and report.status is MessageStatus.COMPLETE
        assert len(box.calls) == 3
        assert [r.tool_choice for r in llm.requests] == ["auto", "auto", "auto", "none"]
        # The last request still carries every result, so the model answers from them.
        assert sum(t.role is Role.TOOL for t in llm.requests[-1].messages) == 3
        assert report.texts[0].startswith("final")
        assert store.replies()[0].metadata["tools"]["rounds"] == 3

    run_virtual(scenario())


def test_calls_to_tools_when_none_were_offered_are_not_run() -> None:
    async def scenario() -> None:
        box = FakeToolBox(**{"x.t": "r"})
        llm = ScriptedLLM(calling(("x.t", {}), text="plain answer"))
        responder, _ = build(llm, box, tools=())
        report = await responder.handle("test", message("hi", "e1"), RecordingSurface())
        assert box.calls == [] and llm.requests[0].tools == ()
        assert report is not None and report.texts[0] == "plain answer"

    run_virtual(scenario())


def test_secrets_never_reach_a_tool_the_model_or_the_store_and_results_are_capped() -> None:
    async def scenario() -> None:
        secret = "xoxb-123456-SECRET"
        box = FakeToolBox(**{"env.dump": f"TOKEN={secret}\n" + "x" * 500})
        llm = ScriptedLLM(calling(("env.dump", {"q": f"find {secret}"})), Script.text("done"))
        responder, store = build(
            llm, box, secrets=[secret], loop=ToolLoopSettings(max_result_chars=100)
        )
        await responder.handle("test", message("dump", "e1"), RecordingSurface())
        assert box.calls == [("env.dump", {"q": "find [redacted]"})]
        result = next(t.content for t in llm.requests[1].messages if t.role is Role.TOOL)
        assert secret not in result and result.startswith("TOKEN=[redacted]")
        assert "[cut: the result had 517 characters; the first 100 are shown]" in result
        assert all(secret not in m.content for m in store.rows.values())

    run_virtual(scenario())


def test_a_running_tool_shows_a_status_line_with_its_time_below_the_text() -> None:
    async def scenario() -> None:
        box = FakeToolBox(**{"docs.search": (12.0, "found")})
        llm = ScriptedLLM(calling(("docs.search", {}), text="Searching."), Script.text("Here."))
        responder, _ = build(llm, box)
        surface = RecordingSurface()
        await responder.handle("test", message("search", "e1"), surface)
        texts = [write.text for write in surface.writes]
        assert any(t.startswith("Searching.") and "🔧 _Using `docs.search`…_" in t for t in texts)
        assert any("🔧 _Using `docs.search`…_ 10 s" in t for t in texts)
        assert "🔧 _Using `docs.search`…_" in surface.statuses
        final = texts[-1]
        assert "Using" not in final and final.startswith("Searching.\n\nHere.")
        assert [a.status for a in surface.tool_activity[0]] == ["in_progress"]
        assert [a.status for a in surface.tool_activity[-1]] == ["complete"]

    run_virtual(scenario())


def test_stop_while_a_tool_runs_cancels_it_and_the_reply_ends_stopped() -> None:
    async def scenario() -> None:
        box = FakeToolBox(**{"slow.t": (60.0, "late")})
        llm = ScriptedLLM(calling(("slow.t", {}), text="Working."))
        responder, store = build(llm, box)
        surface = RecordingSurface()
        task = asyncio.ensure_future(responder.handle("test", message("go", "e1"), surface))
        await asyncio.sleep(5.0)  # virtual time: the tool runs by then
        assert box.calls
        (live,) = responder.controls._live[KEY]  # the one reply streaming
        live.stop("U1")
        report = await task
        assert report is not None and report.status is MessageStatus.STOPPED
        assert box.cancelled == ["slow.t"]
        assert len(llm.requests) == 1

    run_virtual(scenario())


def test_tool_rounds_are_context_for_the_next_turn() -> None:
    async def scenario() -> None:
        box = FakeToolBox(**{"clock.now": "11:00"})
        llm = ScriptedLLM(calling(("clock.now", {})), Script.text("It is 11."), Script.text("ok"))
        responder, _ = build(llm, box)
        await responder.handle("test", message("time?", "e1"), RecordingSurface())
        await responder.handle("test", message("and again?", "e2"), RecordingSurface())
        turns = llm.requests[-1].messages
        roles = [t.role for t in turns]
        assert roles == [Role.USER, Role.ASSISTANT, Role.TOOL, Role.ASSISTANT, Role.USER]
        assert turns[1].tool_calls[0].name == "clock.now" and turns[2].content == "11:00"
        # The footer is for people, not sent back to the model.
        assert turns[3].content == "It is 11."

    run_virtual(scenario())


def test_tool_calls_are_counted_by_tool_and_outcome_for_the_metrics() -> None:
    from bridge.metrics import Registry
    from bridge.telemetry import BridgeMetrics

    async def scenario() -> None:
        box = FakeToolBox(
            **{"web.fetch": ToolFailed("timed out after 1 s", timed_out=True), "calc.add": "3"}
        )
        llm = ScriptedLLM(
            calling(("web.fetch", {}), ("calc.add", {}), ("made.up", {})), Script.text("ok")
        )
        store = MemoryStore()
        metrics = BridgeMetrics(Registry(), ["test"])
        responder = Responder(
            store=store,
            llm=llm,
            scheduler=EditScheduler(interval=1.0),
            settings=SETTINGS,
            observer=metrics,
            tools=Tools(box, ToolLoopSettings()),
        )
        await responder.handle("test", message("go", "e1"), RecordingSurface())
        text = metrics.registry.render()
        for tool, outcome in (("web.fetch", "timeout"), ("calc.add", "ok"), ("unknown", "refused")):
            labels = f'platform="test",tool="{tool}",outcome="{outcome}"'
            line = f"chat_bridge_tool_calls_total{{{labels}}} 1"
            assert line in text, line

    run_virtual(scenario())


def test_arguments_nested_too_deeply_are_refused_and_the_other_calls_finish() -> None:
    async def scenario() -> None:
        box = FakeToolBox(**{"a.slow": (2.0, "A")})
        deep = "[" * 100_000 + "]" * 100_000
        llm = ScriptedLLM(calling(("a.slow", {}), ("a.slow", deep)), Script.text("fine"))
        responder, _ = build(llm, box)
        surface = RecordingSurface()
        report = await responder.handle("test", message("go", "e1"), surface)
        assert report is not None and report.status is MessageStatus.COMPLETE
        results = [t.content for t in llm.requests[1].messages if t.role is Role.TOOL]
        assert results[0] == "A" and results[1].startswith("Error: the arguments")
        # Nothing shows after the reply ended (no ticker left behind).
        shown = len(surface.statuses)
        await asyncio.sleep(30)
        assert len(surface.statuses) == shown

    run_virtual(scenario())


def test_results_are_cut_to_the_room_the_context_has_left() -> None:
    async def scenario() -> None:
        box = FakeToolBox(**{"web.page": "word " * 20_000})
        llm = ScriptedLLM(calling(("web.page", {}), ("web.page", {})), Script.text("summary"))
        responder, store = build(llm, box, max_context_tokens=8000, max_output_tokens=1000)
        report = await responder.handle("test", message("read both", "e1"), RecordingSurface())
        assert report is not None and report.status is MessageStatus.COMPLETE
        second = llm.requests[1]
        results = [t.content for t in second.messages if t.role is Role.TOOL]
        assert all("the conversation has room for the first" in r for r in results)
        sent = sum(estimate_tokens(t.content) for t in second.messages)
        assert sent < 7000  # within the budget (max_context_tokens less max_output_tokens)
        # No room left for another round: the model must answer.
        assert second.tool_choice == "none"
        # Quotas without reported usage count both requests' prompts.
        assert report.estimated_prompt_tokens > 6000
        stored = [m.content for m in store.rows.values() if m.role is Role.TOOL]
        assert stored == results  # what the model saw is what the history keeps

    run_virtual(scenario())


def test_a_model_that_still_calls_tools_when_told_not_to_ends_with_a_notice() -> None:
    async def scenario() -> None:
        box = FakeToolBox(**{"x.again": "more"})
        llm = ScriptedLLM(*(calling(("x.again", {})) for _ in range(3)))
        responder, _ = build(llm, box, loop=ToolLoopSettings(max_rounds=2))
        surface = RecordingSurface()
        report = await responder.handle("test", message("loop", "e1"), surface)
        assert report is not None and report.status is MessageStatus.COMPLETE
        assert len(box.calls) == 2
        shown = surface.writes[-1].text
        assert "the model gave no answer after its tools" in shown and "Used" not in shown

    run_virtual(scenario())


def test_a_stopped_round_shows_its_running_calls_as_stopped() -> None:
    async def scenario() -> None:
        box = FakeToolBox(**{"slow.t": (60.0, "late"), "fast.t": "ok"})
        llm = ScriptedLLM(calling(("fast.t", {}), ("slow.t", {}), text="Working."))
        responder, _ = build(llm, box)
        surface = RecordingSurface()
        task = asyncio.ensure_future(responder.handle("test", message("go", "e1"), surface))
        await asyncio.sleep(5.0)
        (live,) = responder.controls._live[KEY]
        live.stop("U1")
        await task
        last = surface.tool_activity[-1]
        assert [(a.title, a.status, a.detail) for a in last] == [
            ("fast.t", "complete", "0.0 s"),
            ("slow.t", "error", "stopped"),
        ]
        assert [a.id for a in last] == ["tool-1-0", "tool-1-1"]

    run_virtual(scenario())


def test_reasoning_before_tools_ends_when_the_calls_come() -> None:
    async def scenario() -> None:
        from bridge.ports import Reasoning

        box = FakeToolBox(**{"docs.search": (20.0, "found")})
        thinking = Script(
            [(1.0, Reasoning(0, "let me think")), (5.0, Reasoning(0, " more"))]
            + calling(("docs.search", {})).steps
        )
        llm = ScriptedLLM(thinking, Script.text("Answer."))
        responder, _ = build(llm, box, show_reasoning="status")
        surface = RecordingSurface()
        await responder.handle("test", message("q", "e1"), surface)
        after_calls = surface.statuses[surface.statuses.index("🔧 _Using `docs.search`…_") :]
        assert not any(s.startswith("thinking") for s in after_calls)

    run_virtual(scenario())
