"""Figures of one tools benchmark run: what users saw (from the emulator's writes), what the tool
loop cost (from the replies' stored metadata) and what each call took (from the stored rounds).

Per reply, `tools.overhead_ms` is the responder's own measure of a round: from the model's calls
to the next request, less the slowest call as the bridge saw it. Per call, the stored round has
the time the bridge saw (`seconds`, to the millisecond) and, for `slow`, the result holds the
tool's own start and end on the same monotonic clock: their difference is the MCP round trip
beyond the tool's own time (transport, SDK, JSON on both sides, the server's dispatch).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from bench import dbcount
from bench.figures import WINDOWED_METHODS, max_in_window, percentile
from bench.harness import BOTS
from bench.records import VisibleWrite
from bench.reply_text import reply_text
from bench.timelines import Markers, is_complete
from bench.tool_runs import Recorded
from bench.tool_server import tool_times

_CONVERSATION = re.compile(r"\bconv-(\d+)\b")


def spread(values: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """p50 / p95 / p99 / max and the count (None when there is nothing to measure)."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    return {
        "n": len(values),
        "p50": round(percentile(values, 0.50) or 0.0, digits),
        "p95": round(percentile(values, 0.95) or 0.0, digits),
        "p99": round(percentile(values, 0.99) or 0.0, digits),
        "max": round(max(values), digits),
    }


def _squash(text: str) -> str:
    return "".join(text.split())


def shown_times(
    writes: list[VisibleWrite], places: dict[str, int], texts: dict[int, str], markers: Markers
) -> tuple[dict[int, float], dict[int, float], dict[int, bool]]:
    """Per conversation: when the answer's first word was on screen (a status line such as
    "Using `bench.slow`" is not the answer; the answers' words are not in it), when its last
    write came, and whether it ended whole."""
    contents: dict[str, dict[str, str]] = defaultdict(dict)  # place -> message -> text
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    for write in writes:
        conversation = places.get(write.place)
        if conversation is None:
            continue
        contents[write.place][write.message_id] = write.text
        last[conversation] = write.at
        if conversation not in first:
            shown = _squash("".join(markers.strip(t) for t in contents[write.place].values()))
            if texts[conversation].split()[0] in shown:
                first[conversation] = write.at
    complete = {}
    for place, messages in contents.items():
        conversation = places[place]
        shown = "".join(markers.strip(t) for t in messages.values())
        complete[conversation] = is_complete(shown, texts[conversation])
    return first, last, complete


def seen(record: Recorded) -> dict[str, Any]:
    """What users saw, from each message's sending."""
    s = record.run.scenario
    texts = {c: reply_text(c, 0, s.tokens) for c in range(s.conversations)}
    world = record.world
    first, last, complete = shown_times(world.writes, world.places, texts, BOTS["bridge"].markers)
    users = {c: at for c, at in record.user_times.items() if c >= record.run.warmup}
    first_s = [first[c] - users[c] for c in first if c in users]
    whole_s = [last[c] - users[c] for c in last if c in users and complete.get(c)]
    calls = world.calls(record.started_at)
    limited = Counter(call.method for call in calls if call.status == 429)
    result = {
        "replies_complete": sum(done for c, done in complete.items() if c in users),
        "first_text_s": spread(first_s),
        "whole_reply_s": spread(whole_s),
        "wall_s": round(max(last.values(), default=record.started_at) - record.started_at, 2),
        "rate_limited": sum(limited.values()),
        "rate_limited_by_method": dict(sorted(limited.items())),
        "calls_per_reply": round(len(calls) / max(s.conversations, 1), 1),
        "calls_by_method": dict(sorted(Counter(call.method for call in calls).items())),
    }
    for method in WINDOWED_METHODS:
        times = sorted(call.at for call in calls if call.method == method)
        if times:
            result[f"max_60s.{method}"] = max_in_window(times)
    return result


def process_figures(record: Recorded) -> dict[str, Any]:
    replies = max(record.run.scenario.conversations, 1)
    cpu = record.end.cpu_s - record.ready.cpu_s
    writes = dbcount.read_counters(record.db) if record.run.count_writes else {}
    return {
        "cpu_startup_s": round(record.ready.cpu_s, 2),
        "cpu_replies_s": round(cpu, 2),
        "cpu_per_reply_ms": round(cpu / replies * 1000, 1),
        "peak_rss_mb": round(record.end.peak_rss_mb, 1),
        "db_writes_per_reply": round(sum(writes.values()) / replies, 1) if writes else None,
        "helpers_cpu_s": record.helpers_cpu_s,
    }


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return list(conn.execute(sql))


def tool_figures(record: Recorded) -> dict[str, Any]:
    """The loop's cost per round and each call's time, from the database the bridge left."""
    plan = record.run.plan
    replies = _rows(
        record.db,
        "SELECT u.content, r.status, r.metadata FROM messages r JOIN messages u "
        "ON r.reply_to_id = u.id WHERE r.role = 'assistant' AND r.tool_step = 0",
    )
    overheads: list[float] = []
    warmup: list[float] = []
    by_plan: dict[str, list[float]] = defaultdict(list)
    by_round: dict[str, list[float]] = defaultdict(list)
    off_plan = 0
    statuses: Counter[str] = Counter()
    for question, status, metadata in replies:
        conversation = _conversation(question)
        wanted, tool = plan.of(conversation)
        tools = (json.loads(metadata or "{}") or {}).get("tools") or {}
        if conversation < record.run.warmup:
            warmup.extend(tools.get("overhead_ms", ()))
            continue
        statuses[status] += 1
        off_plan += tools.get("rounds", 0) != wanted if record.run.transport != "none" else 0
        for number, ms in enumerate(tools.get("overhead_ms", ()), start=1):
            overheads.append(ms)
            by_plan[f"{tool} x{plan.calls}, {wanted} round{'s' if wanted > 1 else ''}"].append(ms)
            by_round[f"round {number} of {wanted}"].append(ms)
    result: dict[str, Any] = {
        "reply_statuses": dict(statuses),
        "replies_off_plan": off_plan,
        "rounds": len(overheads),
        "overhead_ms": spread(overheads, 2),
        "warmup_overhead_ms": spread(warmup, 2),
        "overhead_ms_by_plan": {kind: spread(v, 2) for kind, v in sorted(by_plan.items())},
        "overhead_ms_by_round": {kind: spread(v, 2) for kind, v in sorted(by_round.items())},
    }
    return result | call_figures(record.db, record.run.warmup)


def _conversation(question: str) -> int:
    found = _CONVERSATION.search(question)
    return int(found.group(1)) if found else -1


def call_figures(db: Path, warmup: int) -> dict[str, Any]:
    """Each call's time as the bridge saw it, and for `slow` its own time and the round trip."""
    rows = [
        (content, metadata)
        for question, content, metadata in _rows(
            db,
            "SELECT u.content, t.content, t.metadata FROM messages t JOIN messages u "
            "ON t.reply_to_id = u.id WHERE t.role = 'tool'",
        )
        if _conversation(question) >= warmup
    ]
    seen_ms: dict[str, list[float]] = defaultdict(list)
    own_ms: list[float] = []
    beyond_ms: list[float] = []
    errors = 0
    for content, metadata in rows:
        meta = json.loads(metadata or "{}") or {}
        tool = str(meta.get("name", "")).rsplit(".", 1)[-1]
        errors += bool(meta.get("error"))
        seconds = float(meta.get("seconds") or 0.0)
        seen_ms[tool].append(seconds * 1000)
        times = tool_times(content) if tool == "slow" else None
        if times is not None:
            own = times[1] - times[0]
            own_ms.append(own * 1000)
            beyond_ms.append((seconds - own) * 1000)
    return {
        "calls": len(rows),
        "call_errors": errors,
        "call_ms_bridge": {tool: spread(v, 1) for tool, v in sorted(seen_ms.items())},
        "slow_own_ms": spread(own_ms, 1),
        "slow_round_trip_beyond_own_ms": spread(beyond_ms, 1),
    }


def all_figures(record: Recorded) -> dict[str, Any]:
    return {
        "finished_before_deadline": record.finished,
        "load_avg_at_end": record.load_avg,
        **seen(record),
        **process_figures(record),
        "tools": tool_figures(record),
    }
