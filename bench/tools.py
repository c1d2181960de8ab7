"""Tools benchmark (issue #16): what the tool loop costs beyond the tools' own time, and 100
concurrent replies that each make two parallel tool calls to a server with 200 ms latency.

    python -m bench.tools loop --wave 1 --json docs/bench/tools-loop-alone.json  # one at a time
    python -m bench.tools loop                     # four in flight; stdio, then streamable HTTP
    python -m bench.tools load discord             # 100 replies: no tools, stdio, HTTP
    python -m bench.tools load slack --replies 50 --transports none,http  # native streaming
    python -m bench.tools load slack --replies 50 --native never --transports none,http
    python -m bench.tools report docs/bench/tools-*.json   # every figure, in Markdown

Every run is the real `chat-bridge run` process against the platform emulator (in this process),
the local model (`bench.tool_llm`, its own process) and the benchmark's MCP server
(`bench.tool_server`: the bridge starts it over stdio, or it runs on its own over HTTP). `loop`
sends its replies a few at a time (`--wave`, after `--warmup` replies left out) in Discord
channels of their own, each reply making 1, 2 or 3 rounds of two parallel calls to `echo` or to
`slow(0.2)`, then a short answer; `load`
sends every message at once and compares with the same replies without tools (no [mcp] at all),
one run after the other in the same invocation. Each result keeps the product's revision and
any test suite or benchmark seen running beside it.

Results go to docs/bench/tools-loop.json and docs/bench/tools-load-<platform>.json unless --json
says otherwise (or --no-save).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.platforms import RESULTS, _revision, machine
from bench.report import _cell
from bench.scenarios import Scenario
from bench.tool_figures import all_figures
from bench.tool_llm import Plan
from bench.tool_runs import ToolRun, Transport, describe, run

OVERHEAD_TARGET_MS = 5.0  # per round, at p99


def loop_runs(args: argparse.Namespace) -> list[ToolRun]:
    plan = Plan(rounds=(1, 2, 3), tools=("echo", "slow"), calls=2, seconds=args.seconds)
    runs = []
    for transport in _transports(args.transports):
        scenario = Scenario(
            f"tools-loop-{transport}", "discord", "tool rounds, a few replies at a time",
            conversations=args.warmup + args.replies, tokens=args.tokens, rate=args.rate,
        )  # fmt: skip
        name = f"loop-{transport}"
        runs.append(ToolRun(name, scenario, plan, transport, args.wave, args.warmup, False))
    return runs


def load_runs(args: argparse.Namespace) -> list[ToolRun]:
    runs = []
    for transport in _transports(args.transports):
        rounds = (0,) if transport == "none" else (1,)
        plan = Plan(rounds=rounds, tools=("slow",), calls=2, seconds=args.seconds)
        scenario = Scenario(
            f"tools-load-{args.platform}-{transport}", args.platform,
            f"{args.replies} concurrent replies", conversations=args.replies,
            tokens=args.tokens, rate=args.rate, native_streaming=args.native,
        )  # fmt: skip
        runs.append(ToolRun(f"load-{transport}", scenario, plan, transport))
    return runs


def _transports(text: str) -> list[Transport]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    for name in names:
        if name not in ("none", "stdio", "http"):
            raise SystemExit(f"unknown transport {name!r}: none, stdio or http")
    return names  # type: ignore[return-value]


async def measure(runs: Sequence[ToolRun], workdir: Path) -> dict[str, Any]:
    """Each run in turn (never two at once: they would share the two cores). The product's
    revision is read before and after: a change meanwhile is said in the results."""
    measured = machine()
    results: dict[str, Any] = {}
    for spec in runs:
        print(f"{spec.name}: running ...", file=sys.stderr, flush=True)
        began = time.monotonic()
        revision = await asyncio.to_thread(_revision)  # what the bridge process loads
        others = await asyncio.to_thread(other_work)
        record = await run(spec, workdir / spec.name)
        others += [c for c in await asyncio.to_thread(other_work) if c not in others]
        if others:
            print(f"{spec.name}: other work shared the machine: {others}", file=sys.stderr)
        figures = await asyncio.to_thread(all_figures, record)
        results[spec.name] = {
            "run": describe(spec),
            "revision": revision,
            "other_work_seen": others,
            "run_seconds": round(time.monotonic() - began, 1),
            **figures,
        }
    after = _revision()
    if after != measured["revision"]:
        measured["revision_at_end"] = after
        print(f"the product changed during the runs: now {after}", file=sys.stderr)
    return {"machine": measured, "results": results}


def other_work() -> list[str]:
    """Test suites and benchmarks running beside this one (outside this process's children):
    they share the two cores, and their presence is kept with the figures."""
    mine = {os.getpid()}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, UnicodeDecodeError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) in mine:
            continue  # this run's own model, server or bridge
        if "pytest" in command or "-m bench." in command:
            found.append(command[:120])
    return found


# --- the report -------------------------------------------------------------------------------


def _p(spread: dict[str, Any] | None, key: str, scale: float = 1.0) -> str:
    value = (spread or {}).get(key)
    return "-" if value is None else f"{value * scale:g}"


def loop_markdown(report: dict[str, Any]) -> str:
    lines = ["| figure | " + " | ".join(report["results"]) + " |"]
    lines.append("|---|" + "---:|" * len(report["results"]))
    tools = {name: r["tools"] for name, r in report["results"].items()}

    def row(label: str, pick: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(pick(t) for t in tools.values()) + " |")

    row("replies / rounds measured", lambda t: f"{sum(t['reply_statuses'].values())} / "
        f"{t['rounds']}")  # fmt: skip
    row("replies off plan / call errors", lambda t: f"{t['replies_off_plan']} / "
        f"{t['call_errors']}")  # fmt: skip
    for key in ("p50", "p95", "p99", "max"):
        row(f"**loop overhead per round {key} (ms)**", lambda t, k=key: _p(t["overhead_ms"], k))
    row("warm-up replies' rounds: p50 / max (ms)", lambda t: _pair(t["warmup_overhead_ms"]))
    kinds = sorted({k for t in tools.values() for k in t["overhead_ms_by_plan"]})
    for kind in kinds:
        row(
            f"overhead p50 / max, {kind} (ms)",
            lambda t, k=kind: _pair(t["overhead_ms_by_plan"].get(k)),
        )
    rounds = sorted({k for t in tools.values() for k in t["overhead_ms_by_round"]})
    for kind in rounds:
        row(
            f"overhead p50 / max, {kind} (ms)",
            lambda t, k=kind: _pair(t["overhead_ms_by_round"].get(k)),
        )
    for tool in ("echo", "slow"):
        for key in ("p50", "p99", "max"):
            row(f"{tool} call as the bridge saw it {key} (ms)",
                lambda t, k=key, n=tool: _p(t["call_ms_bridge"].get(n), k))  # fmt: skip
    for key in ("p50", "p99", "max"):
        row(f"slow's own time {key} (ms)", lambda t, k=key: _p(t["slow_own_ms"], k))
    for key in ("p50", "p95", "p99", "max"):
        row(f"MCP round trip beyond the tool's own time {key} (ms)",
            lambda t, k=key: _p(t["slow_round_trip_beyond_own_ms"], k))  # fmt: skip
    return "\n".join(lines) + "\n"


def _pair(spread: dict[str, Any] | None) -> str:
    return f"{_p(spread, 'p50')} / {_p(spread, 'max')}"


# (label, how to read it from a run's results)
LOAD_ROWS: tuple[tuple[str, Any], ...] = (
    ("replies complete", lambda r: r["replies_complete"]),
    ("429s received", lambda r: r["rate_limited"]),
    ("user msg -> first text p50 (s)", lambda r: r["first_text_s"]["p50"]),
    ("user msg -> first text p95 (s)", lambda r: r["first_text_s"]["p95"]),
    ("user msg -> first text max (s)", lambda r: r["first_text_s"]["max"]),
    ("user msg -> whole reply p50 (s)", lambda r: r["whole_reply_s"]["p50"]),
    ("user msg -> whole reply p95 (s)", lambda r: r["whole_reply_s"]["p95"]),
    ("user msg -> whole reply max (s)", lambda r: r["whole_reply_s"]["max"]),
    ("slow(0.2) call, bridge's view p50 (ms)", lambda r: _call(r, "p50")),
    ("slow(0.2) call, bridge's view p95 (ms)", lambda r: _call(r, "p95")),
    ("slow(0.2) call, bridge's view max (ms)", lambda r: _call(r, "max")),
    ("MCP round trip beyond the tool p50 (ms)", lambda r: _beyond(r, "p50")),
    ("MCP round trip beyond the tool max (ms)", lambda r: _beyond(r, "max")),
    ("loop overhead per round p50 (ms)", lambda r: r["tools"]["overhead_ms"]["p50"]),
    ("loop overhead per round p99 (ms)", lambda r: r["tools"]["overhead_ms"]["p99"]),
    ("loop overhead per round max (ms)", lambda r: r["tools"]["overhead_ms"]["max"]),
    ("platform calls / reply", lambda r: r["calls_per_reply"]),
    ("chat.update in any 60 s", lambda r: r.get("max_60s.chat.update")),
    ("chat.appendStream in any 60 s", lambda r: r.get("max_60s.chat.appendStream")),
    ("chat.stopStream in any 60 s", lambda r: r.get("max_60s.chat.stopStream")),
    ("DB row writes / reply", lambda r: r["db_writes_per_reply"]),
    ("bridge CPU for the replies (s)", lambda r: r["cpu_replies_s"]),
    ("bridge CPU per reply (ms)", lambda r: r["cpu_per_reply_ms"]),
    ("bridge peak RSS (MB)", lambda r: r["peak_rss_mb"]),
    ("MCP server CPU (s)", lambda r: r["helpers_cpu_s"].get("mcp_server")),
    ("LLM server CPU (s)", lambda r: r["helpers_cpu_s"].get("llm_server")),
    ("first msg -> last write (s)", lambda r: r["wall_s"]),
    ("load average at the end (1 min)", lambda r: r["load_avg_at_end"][0]),
)


def _call(result: dict[str, Any], key: str) -> Any:
    return (result["tools"]["call_ms_bridge"].get("slow") or {}).get(key)


def _beyond(result: dict[str, Any], key: str) -> Any:
    return result["tools"]["slow_round_trip_beyond_own_ms"].get(key)


def load_markdown(report: dict[str, Any]) -> str:
    results = report["results"]
    base = results.get("load-none")
    names = list(results)
    with_tools = [n for n in names if n != "load-none"]
    head = "| figure | " + " | ".join(names)
    head += "".join(f" | {n} / none" for n in with_tools) if base else ""
    lines = [head + " |", "|---|" + "---:|" * (len(names) + (len(with_tools) if base else 0))]
    for label, pick in LOAD_ROWS:
        values = [pick(results[n]) for n in names]
        if all(v is None for v in values):
            continue
        cells = [_cell(v) for v in values]
        if base:
            cells += [_ratio(pick(results[n]), pick(base)) for n in with_tools]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _ratio(value: Any, base: Any) -> str:
    if not isinstance(value, int | float) or not isinstance(base, int | float) or not base:
        return "-"
    return f"{value / base:.2f}x"


def verdicts(report: dict[str, Any]) -> list[str]:
    lines = []
    for name, result in report["results"].items():
        overhead = result["tools"]["overhead_ms"]
        if overhead["n"]:
            met = overhead["p99"] < OVERHEAD_TARGET_MS
            lines.append(
                f"{name}: loop overhead p99 {overhead['p99']:g} ms over {overhead['n']} rounds "
                f"(target < {OVERHEAD_TARGET_MS:g}): {'met' if met else 'MISSED'}"
            )
        if report.get("kind") == "load":
            verdict = "met" if result["rate_limited"] == 0 else "MISSED"
            lines.append(f"{name}: 429s {result['rate_limited']} (target 0): {verdict}")
    return lines


def markdown(report: dict[str, Any]) -> str:
    table = loop_markdown(report) if report.get("kind") == "loop" else load_markdown(report)
    return table + "\n" + "\n".join(f"- {line}" for line in verdicts(report)) + "\n"


# --- the command ------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = main.add_subparsers(dest="kind", required=True)
    loop = sub.add_parser("loop", help="the loop's cost per round, 1 to 3 rounds")
    loop.add_argument("--replies", type=int, default=150, help="per transport")
    loop.add_argument("--wave", type=int, default=4, help="replies in flight at once")
    loop.add_argument("--warmup", type=int, default=6, help="replies first, left out")
    loop.add_argument("--transports", default="stdio,http")
    loop.add_argument("--tokens", type=int, default=40)
    load = sub.add_parser("load", help="concurrent replies with two 200 ms calls each")
    load.add_argument("platform", choices=("discord", "slack"))
    load.add_argument("--replies", type=int, default=100)
    load.add_argument("--transports", default="none,stdio,http")
    load.add_argument("--native", choices=("auto", "never"), default="auto", help="Slack only")
    load.add_argument("--tokens", type=int, default=600)
    for each in (loop, load):
        each.add_argument("--rate", type=float, default=50.0, help="tokens per second")
        each.add_argument("--seconds", type=float, default=0.2, help="slow's latency")
        each.add_argument("--json", help="write the results here instead of docs/bench/")
        each.add_argument("--no-save", action="store_true", help="print only")
        each.add_argument("--keep", help="keep databases, configs and logs in this directory")
    report = sub.add_parser("report", help="print saved results as the doc's tables")
    report.add_argument("files", nargs="+")
    return main


def default_path(args: argparse.Namespace) -> Path:
    if args.kind == "loop":
        return RESULTS / "tools-loop.json"
    suffix = "" if args.platform == "discord" else f"-{args.native}-{args.replies}"
    return RESULTS / f"tools-load-{args.platform}{suffix}.json"


def main() -> None:
    args = parser().parse_args()
    if args.kind == "report":
        for name in args.files:
            print(f"#### {name}\n\n{markdown(json.loads(Path(name).read_text()))}")
        return
    runs = loop_runs(args) if args.kind == "loop" else load_runs(args)
    with tempfile.TemporaryDirectory(prefix="bench-tools-") as tmp:
        workdir = Path(args.keep) if args.keep else Path(tmp)
        report = {"kind": args.kind, **asyncio.run(measure(runs, workdir))}
    report["command"] = "python -m bench.tools " + " ".join(sys.argv[1:])
    print(markdown(report))
    if not args.no_save:
        path = Path(args.json) if args.json else default_path(args)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"saved {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
