"""Prints a scenario's figures as a bridge / seed / ratio table and checks the bridge's targets.

python -m bench.report docs/bench/platforms-*.json            # the doc's tables, in Markdown
python -m bench.report --summary docs/bench/platforms-*.json  # one line per scenario
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.scenarios import Scenario

# (key, label): the rows of the table, in reading order.
ROWS = (
    ("placeholder_p50_s", "user msg -> placeholder p50 (s)"),
    ("placeholder_max_s", "user msg -> placeholder max (s)"),
    ("first_text_p50_s", "user msg -> first text p50 (s)"),
    ("first_text_max_s", "user msg -> first text max (s)"),
    ("first_lag_p50_s", "first chunk sent -> visible p50 (s)"),
    ("first_lag_max_s", "first chunk sent -> visible max (s)"),
    ("gap_p50_s", "gap between updates p50 (s)"),
    ("gap_p99_s", "gap between updates p99 (s)"),
    ("gap_max_s", "gap between updates max (s)"),
    ("stall_max_s", "longest time without growth (s)"),
    ("final_lag_mean_s", "last chunk -> final text mean (s)"),
    ("final_lag_max_s", "last chunk -> final text max (s)"),
    ("stream_span_max_s", "LLM stream span max (s)"),
    ("updates_per_reply", "visible updates / reply"),
    ("calls_per_reply", "platform calls / reply"),
    ("rate_limited", "429s received"),
    ("max_60s.chat.update", "chat.update in any 60 s"),
    ("max_60s.chat.appendStream", "chat.appendStream in any 60 s"),
    ("db_writes_per_reply", "DB row writes / reply"),
    ("cpu_replies_s", "CPU for the replies (s)"),
    ("cpu_per_reply_ms", "CPU per reply (ms)"),
    ("cpu_startup_s", "CPU to start and connect (s)"),
    ("peak_rss_mb", "peak RSS (MB)"),
    ("replies_complete", "replies complete"),
    ("auth_test_calls", "auth.test calls, start included"),
    ("wall_s", "first msg -> last update (s)"),
)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _ratio(bridge: Any, seed: Any) -> str:
    numbers = (int, float)
    if isinstance(bridge, bool) or not isinstance(bridge, numbers) or not isinstance(seed, numbers):
        return "-"
    if bridge == 0:
        return "-" if seed == 0 else "inf"
    return f"{seed / bridge:.1f}x"


def print_table(scenario: Scenario, report: dict[str, Any]) -> None:
    results = report["results"]
    bridge = results.get("bridge", {})
    seed = results.get("seed", {})
    print(
        f"\n{scenario.name}: {scenario.description}\n"
        f"{scenario.replies} replies of {scenario.tokens} tokens at {scenario.rate:g} tokens/s, "
        f"edit_interval {scenario.edit_interval:g} s"
    )
    print(f"{'metric':<38}{'bridge':>10}{'seed':>10}{'seed/bridge':>13}")
    for key, label in ROWS:
        if key not in bridge and key not in seed:
            continue
        b, s = bridge.get(key), seed.get(key)
        print(f"{label:<38}{_cell(b):>10}{_cell(s):>10}{_ratio(b, s):>13}")
    if seed and not seed.get("finished_before_deadline", True):
        print("seed: stopped at the deadline before every reply was final (see replies complete)")
    for check in report["targets"]:
        verdict = "met" if check["met"] else "MISSED"
        print(
            f"target {check['label']}: {_cell(check['value'])} <= {check['limit']:g} "
            f"[popular bots {check['popular']}] {verdict}"
        )


def target_checks(scenario: Scenario, bridge: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not bridge:
        return []
    checks = []
    for target in scenario.targets:
        value = bridge.get(target.metric)
        checks.append(
            {
                "metric": target.metric,
                "label": target.label,
                "limit": target.limit,
                "popular": target.popular,
                "value": value,
                "met": value is not None and value <= target.limit,
            }
        )
    return checks


def markdown(report: dict[str, Any]) -> str:
    """One saved report as the Markdown table docs/benchmarks.md shows."""
    scenario = report["scenario"]
    results = report["results"]
    bridge, seed = results.get("bridge", {}), results.get("seed", {})
    lines = [
        f"#### {scenario['name']}: {scenario['description']}",
        "",
        f"{scenario['conversations'] * scenario['n']} replies of {scenario['tokens']} tokens at "
        f"{scenario['rate']:g} tokens/s, edit_interval {scenario['edit_interval']:g} s. "
        f"Run time: {_durations(report)}. Revision: {_revisions(report)}.",
        "",
        "| figure | bridge | seed | seed / bridge |",
        "|---|---:|---:|---:|",
    ]
    for key, label in ROWS:
        if key in bridge or key in seed:
            b, s = bridge.get(key), seed.get(key)
            lines.append(f"| {label} | {_cell(b)} | {_cell(s)} | {_ratio(b, s)} |")
    if seed and not seed.get("finished_before_deadline", True):
        lines += ["", "The seed was stopped at its deadline before every reply was final."]
    return "\n".join(lines) + "\n"


def _revisions(report: dict[str, Any]) -> str:
    measured = report.get("machine", {}).get("revision", "unknown")
    earlier = report.get("earlier", {})
    if not earlier:
        return str(measured)
    kept = ", ".join(f"{a} from {e.get('revision')}" for a, e in earlier.items())
    return f"{measured} ({kept}, an earlier run)"


def _durations(report: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:g} s" for k, v in report.get("run_seconds", {}).items())


# (key, label) of the one-line-per-scenario summary; the seed's figure follows as a ratio.
SUMMARY = (
    ("first_text_max_s", "first text max (s)"),
    ("gap_max_s", "longest gap (s)"),
    ("final_lag_max_s", "last chunk -> final max (s)"),
    ("rate_limited", "429s"),
    ("calls_per_reply", "calls / reply"),
    ("db_writes_per_reply", "DB writes / reply"),
    ("cpu_per_reply_ms", "CPU / reply (ms)"),
    ("peak_rss_mb", "peak RSS (MB)"),
)


def summary(reports: list[dict[str, Any]]) -> str:
    """Bridge figures per scenario, each with the seed's ratio in brackets."""
    head = "| scenario | " + " | ".join(label for _, label in SUMMARY) + " |"
    lines = [head, "|---|" + "---:|" * len(SUMMARY)]
    for report in reports:
        bridge = report["results"].get("bridge", {})
        seed = report["results"].get("seed", {})
        cells = []
        for key, _ in SUMMARY:
            b, s = bridge.get(key), seed.get(key)
            ratio = _ratio(b, s)
            cells.append(_cell(b) + (f" ({ratio})" if ratio != "-" else ""))
        lines.append(f"| {report['scenario']['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = sys.argv[1:]
    reports = [json.loads(Path(name).read_text()) for name in args if name != "--summary"]
    if "--summary" in args:
        print(summary(reports))
        return
    for report in reports:
        print(markdown(report))


if __name__ == "__main__":
    main()
