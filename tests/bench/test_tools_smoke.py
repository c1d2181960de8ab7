"""The tools benchmark end to end on tiny runs (the real `chat-bridge run`, the Discord emulator,
the benchmark's model and MCP server), so it cannot rot. Figures are checked for presence and
sense, never for speed: the machine is shared."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.tool_llm import Plan, answer
from bench.tools import load_runs, loop_runs, markdown, measure


def test_the_model_makes_the_planned_rounds_then_answers_with_the_scripted_text() -> None:
    plan = Plan(rounds=(1, 2), tools=("echo", "slow"), calls=2)
    assert [plan.of(c) for c in range(4)] == [(1, "echo"), (2, "echo"), (1, "slow"), (2, "slow")]
    offered = [{"type": "function", "function": {"name": "bench__slow"}}]
    round_: list[dict[str, Any]] = [
        {"role": "assistant", "tool_calls": [{"id": "a"}]},
        {"role": "tool", "tool_call_id": "a", "content": "1 2"},
    ]
    messages: list[dict[str, Any]] = [{"role": "user", "content": "conv-3: go"}]
    first = answer(plan, 5, {"messages": messages, "tools": offered})
    assert [call.name for call in first.tool_calls] == ["bench__slow", "bench__slow"]
    assert answer(plan, 5, {"messages": messages + round_, "tools": offered}).tool_calls
    last = answer(plan, 5, {"messages": messages + round_ + round_, "tools": offered})
    assert not last.tool_calls and last.text  # its two rounds made: the answer
    # Told not to call (the bridge's last round), it answers even short of its plan.
    told = {"messages": messages + round_, "tools": offered, "tool_choice": "none"}
    assert not answer(plan, 5, told).tool_calls


async def test_the_loop_cost_is_measured_per_round_beside_each_calls_own_time(
    tmp_path: Path,
) -> None:
    args = argparse.Namespace(
        replies=6, wave=6, warmup=0, transports="stdio", tokens=5, rate=200.0, seconds=0.2
    )
    report = {"kind": "loop", **await measure(loop_runs(args), tmp_path)}

    tools = report["results"]["loop-stdio"]["tools"]
    assert tools["reply_statuses"] == {"complete": 6}
    assert tools["replies_off_plan"] == 0 and tools["call_errors"] == 0
    assert tools["rounds"] == 12 and tools["calls"] == 24  # (1 + 2 + 3) rounds x 2 tools, 2 calls
    overhead = tools["overhead_ms"]
    # The round's cost beyond its slowest call: never the 200 ms the tool itself takes.
    assert 0 < overhead["p50"] <= overhead["p99"] <= overhead["max"] < 150
    own = tools["slow_own_ms"]
    assert own["n"] == 12 and 195 < own["p50"] < 260
    assert tools["call_ms_bridge"]["slow"]["p50"] >= own["p50"] - 1  # ms rounding
    assert tools["slow_round_trip_beyond_own_ms"]["p50"] >= -1
    assert tools["call_ms_bridge"]["echo"]["n"] == 12
    assert "loop overhead per round p99" in markdown(report)


async def test_replies_with_two_slow_calls_against_the_same_replies_without_tools(
    tmp_path: Path,
) -> None:
    args = argparse.Namespace(
        platform="discord", replies=3, transports="none,http", native="auto", tokens=5,
        rate=200.0, seconds=0.2,
    )  # fmt: skip
    report = {"kind": "load", **await measure(load_runs(args), tmp_path)}

    plain, with_tools = report["results"]["load-none"], report["results"]["load-http"]
    for result in (plain, with_tools):
        assert result["finished_before_deadline"]
        assert result["replies_complete"] == 3 and result["rate_limited"] == 0
        assert result["first_text_s"]["n"] == result["whole_reply_s"]["n"] == 3
        assert result["peak_rss_mb"] > 0 and result["cpu_replies_s"] >= 0
    assert plain["tools"]["calls"] == 0 and plain["tools"]["overhead_ms"]["n"] == 0
    assert with_tools["tools"]["calls"] == 6 and with_tools["tools"]["rounds"] == 3
    # A reply with tools cannot end before its 200 ms calls did.
    assert with_tools["whole_reply_s"]["p50"] > 0.2
    assert with_tools["helpers_cpu_s"]["mcp_server"] > 0
    assert "load-http / none" in markdown(report)
