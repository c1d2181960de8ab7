"""The soak's figures from what it recorded: every mention's outcome, first-text latency, 429s
by method or route, the takeover after each kill, RSS over time per process, the instances' log
warnings; then the table `bench.soak` prints.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.soak_fleet import Instance

if TYPE_CHECKING:
    from bench.soak import Soak
    from bench.soak_faults import Kill

ROOT = Path(__file__).resolve().parents[1]
# Mentions sent this long after a fault count as "under a fault" (the rest: "steady").
FAULT_WINDOW = 45.0
PLATFORMS = ("slack", "discord")


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(p * len(ordered) + 0.5) - 1))], 3)


def spread(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": percentile(values, 0.50),
        "p99": percentile(values, 0.99),
        "max": round(max(values), 3) if values else None,
    }


def revision() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    head = git("rev-parse", "--short", "HEAD")
    return head + (" with uncommitted changes" if git("status", "--porcelain") else "")


def figures(
    soak: Soak, outcomes: dict[int, str], settled_at: float, duration: float, late: list[int]
) -> dict[str, Any]:
    """`outcomes` as the platforms show them after the instances stopped; `late`: mentions that
    had no final reply when the settle time ended, and got one during the instances' drain."""
    world = soak.world
    fault_times = [r.at for r in soak.faults.records]
    llm_asked = _llm_requests(soak.workdir / "llm.jsonl")
    cut = {(k.platform, pid) for k in soak.faults.kills for pid in k.in_flight}
    cut |= {entry for k in soak.faults.kills for entry in k.also_cut}
    platforms: dict[str, Any] = {}
    for platform in PLATFORMS:
        asked = [a for a in world.asked if a.platform == platform]
        kinds = Counter(outcomes[a.key] for a in asked)
        first = [a.first_text - a.sent for a in asked if a.first_text is not None]
        steady = [
            a.first_text - a.sent
            for a in asked
            if a.first_text is not None
            and not any(t - 1.0 <= a.sent <= t + FAULT_WINDOW for t in fault_times)
        ]
        platforms[platform] = {
            "messages_in": len(asked),
            "replies_out": sum(1 for a in asked if a.bot_messages),
            "complete": kinds["complete"],
            "notices": {k.split(":", 1)[1]: n for k, n in kinds.items() if k.startswith("notice")},
            # A notice on a mention no kill cut: some other fault ended a reply early.
            "notices_outside_kills": sum(
                1
                for a in asked
                if outcomes[a.key].startswith("notice") and (platform, a.platform_id) not in cut
            ),
            "duplicates": kinds["duplicate"],
            "lost": kinds["lost"] + kinds["stuck"],
            "lost_no_reply": kinds["lost"],
            "lost_stuck": kinds["stuck"],
            "mismatch": kinds["mismatch"],
            "late": sum(1 for a in asked if a.key in late),
            "llm_requests": sum(llm_asked.get(a.key, 0) for a in asked),
            "llm_asked_twice": sum(1 for a in asked if llm_asked.get(a.key, 0) > 1),
            "first_text_s": spread(first),
            "first_text_steady_s": spread(steady),
            "problems": [
                {
                    "key": a.key,
                    "outcome": outcomes[a.key],
                    "late": a.key in late,
                    "place": a.place,
                    "id": a.platform_id,
                    "sent_s": round(a.sent, 2),
                    "first_text_after_s": None
                    if a.first_text is None
                    else round(a.first_text - a.sent, 2),
                    "bot_messages": len(a.bot_messages),
                }
                for a in asked
                if a.key in late
                or (outcomes[a.key] != "complete" and not outcomes[a.key].startswith("notice"))
            ],  # fmt: skip
        }
    injected: dict[str, Counter[str]] = {"slack": Counter(), "discord": Counter()}
    for record in soak.faults.records:
        if record.name.endswith("429-storm") and "injected" in record.detail:
            injected[record.name.split("-")[0]].update(record.detail["injected"])
    return {
        "revision": revision(),
        "topology": soak.topology,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(soak.args).items()},
        "duration_s": duration,
        "traffic_s": [round(soak.traffic_start, 1), round(soak.traffic_end, 1)],
        "settled_at_s": round(settled_at, 1),
        "leases_never_taken": soak.leases_missing,
        "load_average": os.getloadavg(),
        "platforms": platforms,
        "rate_limited": world.rate_limited(),
        "injected_429": {p: dict(c) for p, c in injected.items()},
        "platform_stats": world.platform_stats(),
        "send_errors": world.send_errors,
        "faults": [
            {"name": r.name, "at_s": round(r.at, 2), "detail": r.detail}
            | _effect(soak, r.at, r.detail, outcomes)
            for r in soak.faults.records
        ],
        "takeovers": [_takeover(soak, kill, outcomes) for kill in soak.faults.kills],
        "lease_changes": soak.lease_log,
        # Every mention: [key, platform, sent (s), first text after (s), last change after (s),
        # bot messages, outcome]
        "mentions": [
            [
                a.key,
                a.platform,
                round(a.sent, 2),
                None if a.first_text is None else round(a.first_text - a.sent, 3),
                None if a.last_change is None else round(a.last_change - a.sent, 2),
                len(a.bot_messages),
                outcomes[a.key],
            ]
            for a in world.asked
        ],  # fmt: skip
        "processes": _processes(soak),
        "logs": {i.name: _log_summary(i) for i in soak.fleet.instances},
        "harness_loop_lag_ms": {
            "p99": _ms(percentile(soak.loop_lag, 0.99)),
            "max": _ms(max(soak.loop_lag, default=0.0)),
            "over_100ms": sum(1 for lag in soak.loop_lag if lag > 0.1),
        },
    }


def _effect(
    soak: Soak, at: float, detail: dict[str, Any], outcomes: dict[int, str]
) -> dict[str, Any]:
    """What became of the mentions a fault hit (those it names: the streams it expired, the
    replies streaming through a gateway drop) and of those sent in the FAULT_WINDOW after it."""
    found: dict[str, Any] = {}
    named = detail.get("mentions")
    if named:
        found["named_outcomes"] = dict(Counter(outcomes[k] for k in named))
    after = [a for a in soak.world.asked if at <= a.sent <= at + FAULT_WINDOW]
    found["after_outcomes"] = dict(Counter(outcomes[a.key] for a in after))
    for platform in PLATFORMS:
        waits = [a.first_text - a.sent for a in after if a.platform == platform and a.first_text]
        found[f"after_first_text_max_s_{platform}"] = round(max(waits), 2) if waits else None
    return found


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _llm_requests(path: Path) -> Counter[int]:
    asked: Counter[int] = Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("stream"):
                asked[entry["conversation"]] += 1
    return asked


def _takeover(soak: Soak, kill: Kill, outcomes: dict[int, str]) -> dict[str, Any]:
    world = soak.world
    found: dict[str, Any] = {
        "platform": kill.platform, "victim": kill.victim, "killed_at_s": round(kill.at, 2),
        "lease": kill.lease, "replacement": kill.replacement, "in_flight": len(kill.in_flight),
        "replacements_that_exited_at_start": kill.failed_starts,
    }  # fmt: skip
    if kill.lease is not None:
        taken = [
            (t, holder)
            for t, lease, holder in soak.lease_log
            if lease == kill.lease and t >= kill.at and holder not in (None, kill.victim)
        ]
        if taken:
            found["new_holder"] = taken[0][1]
            found["lease_taken_after_s"] = round(taken[0][0] - kill.at, 2)
            holder = next(i for i in soak.fleet.instances if i.name == taken[0][1])
            line = holder.said(rf"holds {re.escape(kill.lease)}$", after_wall=kill.wall)
            if line is not None:
                found["log_line_after_s"] = round(line.wall - kill.wall, 2)
    if kill.owner is not None:
        # Another instance's recovery sweep found the dead process and settled all it held.
        gone = rf"recovery: process {kill.owner} is gone"
        lines = [
            (line, i.name)
            for i in soak.fleet.instances
            for line in [i.said(gone, after_wall=kill.wall)]
            if line is not None
        ]
        if lines:
            line, name = min(lines, key=lambda found: found[0].wall)
            found["dead_process_settled_after_s"] = round(line.wall - kill.wall, 2)
            found["settled_by"] = name
    cut = [
        a for a in world.asked if a.platform == kill.platform and a.platform_id in kill.in_flight
    ]
    found["in_flight_outcomes"] = dict(Counter(outcomes[a.key] for a in cut))
    ends = [a.last_change - kill.at for a in cut if a.last_change is not None]
    found["in_flight_ended_after_s"] = round(max(ends), 2) if ends else None
    later = [a for a in world.asked if a.platform == kill.platform and a.sent >= kill.at]
    shown = [a.first_text for a in later if a.first_text is not None]
    if shown:
        found["first_new_text_after_s"] = round(min(shown) - kill.at, 2)
    window = [a.first_text - a.sent for a in later if a.sent <= kill.at + 20 and a.first_text]
    found["first_text_max_in_20s_after_s"] = round(max(window), 2) if window else None
    return found


def _rss(
    series: list[tuple[float, float, float]], started: float, warmup: float, killed: float | None
) -> dict[str, Any]:
    base = next(((t, rss) for t, rss, _ in series if t >= started + warmup), None)
    end = series[-1] if series else None
    found: dict[str, Any] = {
        "samples": len(series),
        "killed_at_s": None if killed is None else round(killed, 1),
        "after_warmup_mb": None if base is None else base[1],
        "after_warmup_at_s": None if base is None else base[0],
        "end_mb": None if end is None else end[1],
        "end_at_s": None if end is None else end[0],
        "max_mb": max((rss for _, rss, _ in series), default=None),
        "cpu_s": None if end is None else end[2],
        "series": [[t, rss] for t, rss, _ in series],
    }
    if base is not None and end is not None and base[0] < end[0]:
        found["change_pct"] = round((end[1] - base[1]) / base[1] * 100, 1)
        after = [(t, rss) for t, rss, _ in series if t >= base[0]]
        found["slope_mb_per_min"] = _slope(after)
    return found


def _slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares growth, MB per minute."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread_t = sum((t - mean_t) ** 2 for t, _ in points)
    if spread_t == 0:
        return None
    return round(sum((t - mean_t) * (y - mean_y) for t, y in points) / spread_t * 60, 3)


def _processes(soak: Soak) -> dict[str, Any]:
    warmup = soak.args.warmup
    found = {
        i.name: _rss(i.rss, i.started, warmup, i.killed)
        | {"platforms": list(i.platforms), "exited_at_start": not i.ran}
        for i in soak.fleet.instances
    }
    for name, series in soak.fleet.helper_rss.items():
        found[name] = _rss(series, 0.0, warmup, None)
    return found


def _log_summary(instance: Instance) -> dict[str, Any]:
    levels = Counter(line.level for line in instance.lines if line.level)
    shapes: Counter[str] = Counter()
    for line in instance.lines:
        if line.level in ("WARNING", "ERROR", "CRITICAL"):
            shapes[f"{line.level} {line.logger}: {_shape(line.text)}"] += 1
    return {
        "exit_code": instance.exit_code,
        "killed": instance.killed is not None,
        "warnings": levels["WARNING"],
        "errors": levels["ERROR"] + levels["CRITICAL"],
        "tracebacks": sum(1 for line in instance.lines if line.text.startswith("Traceback")),
        "top": [f"{n}x {shape}" for shape, n in shapes.most_common(12)],
        # Every ERROR in full (the soak's working folder, with the logs, is removed at the end).
        "errors_seen": [
            f"{line.logger}: {line.text[:300]}"
            for line in instance.lines
            if line.level in ("ERROR", "CRITICAL")
        ][:20],
    }


def _shape(text: str) -> str:
    """A log message with its ids and numbers blanked, so alike lines count together."""
    return re.sub(r"\d+(\.\d+)?", "N", text)[:160]


# --- the table --------------------------------------------------------------------------------


def print_table(result: dict[str, Any]) -> None:
    s = result["settings"]
    p = result["platforms"]
    print()
    print(f"soak: {result['duration_s']:.0f}s of traffic at {s['rate']} mentions/s, "
          f"replies of {s['tokens']} tokens at {s['token_rate']}/s, topology "
          f"{result['topology']}, revision {result['revision']}")  # fmt: skip
    rows = [
        ("messages in", "messages_in"),
        ("replies out", "replies_out"),
        ("  the model's text, complete", "complete"),
        ("  duplicates (2+ replies)", "duplicates"),
        ("  lost (no reply, or stuck)", "lost"),
        ("  ended with other text", "mismatch"),
        ("  notices on mentions no kill cut", "notices_outside_kills"),
        ("  final only after the settle time", "late"),
        ("LLM requests", "llm_requests"),
        ("  mentions asked twice", "llm_asked_twice"),
    ]
    print(f"{'':34}{'slack':>12}{'discord':>12}")
    for label, key in rows:
        print(f"{label:34}{p['slack'][key]:>12}{p['discord'][key]:>12}")
    kinds = sorted(set(p["slack"]["notices"]) | set(p["discord"]["notices"]))
    for kind in kinds:
        print(f"{'  notice: ' + kind:34}{p['slack']['notices'].get(kind, 0):>12}"
              f"{p['discord']['notices'].get(kind, 0):>12}")  # fmt: skip
    for label, key in (("first text", "first_text_s"), ("  outside faults", "first_text_steady_s")):
        for stat in ("p50", "p99", "max"):
            cells = [_cell(p[x][key][stat]) for x in PLATFORMS]
            print(f"{label + ' ' + stat + ' (s)':34}{cells[0]:>12}{cells[1]:>12}")
    print("\n429s received (injected):")
    for platform in PLATFORMS:
        got = result["rate_limited"][platform]
        injected = result["injected_429"][platform]
        for name in sorted(set(got) | set(injected)):
            print(f"  {platform:8}{name:56}{got.get(name, 0):>6} ({injected.get(name, 0)})")
    print(f"\nfaults (mentions sent in the {FAULT_WINDOW:g}s after: outcomes, worst first text):")
    for fault in result["faults"]:
        named = fault.get("named_outcomes")
        print(f"  t={fault['at_s']:7.1f}s {fault['name']:22} {fault['after_outcomes']} "
              f"slack {fault['after_first_text_max_s_slack']}s discord "
              f"{fault['after_first_text_max_s_discord']}s"
              + (f"; the mentions it hit: {named}" if named else ""))  # fmt: skip
    print("\ntakeovers:")
    for t in result["takeovers"]:
        print(f"  {t['platform']}: kill -9 of {t['victim']} at t={t['killed_at_s']}s with "
              f"{t['in_flight']} in flight -> {t.get('new_holder', '-')} holds "
              f"{t['lease']} after {t.get('lease_taken_after_s', '-')}s (log line "
              f"{t.get('log_line_after_s', '-')}s); its rows settled by "
              f"{t.get('settled_by', '-')} after {t.get('dead_process_settled_after_s', '-')}s; "
              f"in-flight "
              f"ended after {t['in_flight_ended_after_s']}s {t['in_flight_outcomes']}; first text "
              f"of a new mention after {t.get('first_new_text_after_s', '-')}s; worst first "
              f"text within 20s {t['first_text_max_in_20s_after_s']}s")  # fmt: skip
    print("\nRSS (MB): process, after warm-up, end, change, max, growth MB/min after warm-up")
    for name, proc in result["processes"].items():
        change = proc.get("change_pct")
        killed = f" (killed at {proc['killed_at_s']}s)" if proc["killed_at_s"] else ""
        killed += " (exited at start)" if proc.get("exited_at_start") else ""
        print(f"  {name:12}{_cell(proc['after_warmup_mb']):>10}{_cell(proc['end_mb']):>10}"
              f"{'' if change is None else f'{change:+.1f} %':>10}{_cell(proc['max_mb']):>10}"
              f"{_cell(proc.get('slope_mb_per_min')):>10}{killed}")  # fmt: skip
    print("\nlogs: warnings / errors / tracebacks per instance")
    for name, summary in result["logs"].items():
        print(f"  {name:12}{summary['warnings']:>6}{summary['errors']:>6}{summary['tracebacks']:>6}"
              f"  exit {summary['exit_code']}")  # fmt: skip
    lag = result["harness_loop_lag_ms"]
    print(f"\nharness loop lag p99 {lag['p99']} ms, max {lag['max']} ms")


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:g}"
