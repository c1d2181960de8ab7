"""Turns one run's records (writes, calls, the LLM log, database counters, /proc samples) into the
figures the report shows. Every time is on the one monotonic clock of the machine.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.procstat import ProcessSample
from bench.records import PlatformCall
from bench.scenarios import Scenario
from bench.timelines import ReplyTimeline, is_complete

# The methods whose per-minute budget is shared by a whole Slack workspace.
WINDOWED_METHODS = ("chat.update", "chat.appendStream", "chat.startStream", "chat.stopStream")


@dataclass(frozen=True, slots=True)
class StreamTiming:
    """When the LLM server took a conversation's request (its first chunk leaves right then) and
    when it had written the last one."""

    received: float
    done: float


@dataclass
class RunRecord:
    scenario: Scenario
    approach: str
    user_times: dict[int, float]
    placeholders: dict[int, list[float]]  # conversation -> placeholder times
    timelines: dict[tuple[int, int], ReplyTimeline]
    texts: dict[tuple[int, int], str]
    streams: dict[int, StreamTiming]
    calls: list[PlatformCall]
    db_writes: dict[str, int]
    ready: ProcessSample  # the bot idle and connected, before the first user message
    end: ProcessSample  # after the last reply was final (and stored)
    wall_s: float
    finished: bool  # every reply final before the deadline
    helpers_cpu_s: dict[str, float]


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def max_in_window(times: list[float], window: float = 60.0) -> int:
    """The most calls in any `window` seconds."""
    best, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def figures(run: RunRecord) -> dict[str, Any]:
    scenario = run.scenario
    replies = list(run.timelines.values())
    count = len(replies)
    placeholder_s: list[float] = []
    for conversation, times in run.placeholders.items():
        placeholder_s += [at - run.user_times[conversation] for at in times]
    first_text_s: list[float] = []
    first_lag_s: list[float] = []
    final_lag_s: list[float] = []
    gaps: list[float] = []
    stalls: list[float] = []
    complete = 0
    for reply in replies:
        stream = run.streams.get(reply.conversation)
        if reply.first_text_at is not None:
            first_text_s.append(reply.first_text_at - run.user_times[reply.conversation])
            if stream is not None:
                first_lag_s.append(reply.first_text_at - stream.received)
        done = is_complete(reply.shown, run.texts[(reply.conversation, reply.choice)])
        complete += done
        if done and reply.final_at is not None and stream is not None:
            # The server's schedule for the last chunk: a consumer that reads late (the seed)
            # cannot make the model finish later than it did.
            last_chunk = stream.received + scenario.stream_seconds
            final_lag_s.append(reply.final_at - last_chunk)
        gaps += reply.gaps
        stalls.append(reply.longest_stall)
    spans = [s.done - s.received for s in run.streams.values()]
    by_method = Counter(call.method for call in run.calls)
    limited = Counter(call.method for call in run.calls if call.status == 429)
    db_total = sum(run.db_writes.values())
    result: dict[str, Any] = {
        "approach": run.approach,
        "replies": count,
        "replies_complete": complete,
        "replies_incomplete": count - complete,
        "finished_before_deadline": run.finished,
        "wall_s": round(run.wall_s, 2),
        "placeholder_p50_s": _round(percentile(placeholder_s, 0.5)),
        "placeholder_max_s": _round(max(placeholder_s, default=None)),
        "first_text_p50_s": _round(percentile(first_text_s, 0.5)),
        "first_text_max_s": _round(max(first_text_s, default=None)),
        "first_lag_p50_s": _round(percentile(first_lag_s, 0.5)),
        "first_lag_max_s": _round(max(first_lag_s, default=None)),
        "gap_p50_s": _round(percentile(gaps, 0.5)),
        "gap_p99_s": _round(percentile(gaps, 0.99)),
        "gap_max_s": _round(max(gaps, default=None)),
        "stall_max_s": _round(max(stalls, default=None)),
        "final_lag_mean_s": _round(statistics.fmean(final_lag_s) if final_lag_s else None),
        "final_lag_max_s": _round(max(final_lag_s, default=None)),
        "stream_span_max_s": _round(max(spans, default=None), 2),
        "updates_per_reply": round(sum(len(r.updates) for r in replies) / max(count, 1), 1),
        "calls_per_reply": round(len(run.calls) / max(count, 1), 1),
        "rate_limited": sum(limited.values()),
        "db_writes_per_reply": round(db_total / max(count, 1), 1),
        "cpu_startup_s": round(run.ready.cpu_s, 2),
        "cpu_replies_s": round(run.end.cpu_s - run.ready.cpu_s, 2),
        "cpu_per_reply_ms": round((run.end.cpu_s - run.ready.cpu_s) / max(count, 1) * 1000, 1),
        "peak_rss_mb": round(run.end.peak_rss_mb, 1),
        "calls_by_method": dict(sorted(by_method.items())),
        "rate_limited_by_method": dict(sorted(limited.items())),
        "db_writes": run.db_writes,
        "helpers_cpu_s": {k: round(v, 2) for k, v in run.helpers_cpu_s.items()},
    }
    for method in WINDOWED_METHODS:
        times = sorted(call.at for call in run.calls if call.method == method)
        if times:
            result[f"max_60s.{method}"] = max_in_window(times)
    return result
