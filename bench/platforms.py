"""Platform benchmarks: the real `chat-bridge run` process against the Slack or Discord emulator
and the local LLM server, then the seed bot on the same scenario, with their ratio.

    python -m bench.platforms discord-20            # one scenario, bridge then seed
    python -m bench.platforms --list                # the scenarios
    python -m bench.platforms slack-20-edits --approach bridge

Results go to docs/bench/platforms-<scenario>.json unless --json says otherwise (or --no-save).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.harness import Approach, run
from bench.report import print_table, target_checks
from bench.scenarios import SCENARIOS, Scenario

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "bench"
PRODUCT = ("bridge", "adapters", "storage", "sandbox")  # what the results depend on


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    total_kb = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
    return {
        "nproc": os.cpu_count(),
        "memory_gb": round(total_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "revision": _revision(),
    }


def _revision() -> str:
    """The commit measured, and whether the product code differed from it (read-only git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", *PRODUCT],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head} + uncommitted changes in the product code" if changed else head


async def run_scenario(
    scenario: Scenario,
    approaches: list[Approach],
    workdir: Path,
    *,
    grace: float | None = None,
) -> dict[str, Any]:
    """Both approaches, one after the other (never at once: they would share the two cores)."""
    results: dict[str, Any] = {}
    durations: dict[str, float] = {}
    for approach in approaches:
        print(f"{scenario.name}: running {approach} ...", file=sys.stderr, flush=True)
        began = time.monotonic()
        results[approach] = await run(scenario, approach, workdir / approach, grace=grace)
        durations[approach] = round(time.monotonic() - began, 1)
    return {
        "scenario": {k: v for k, v in asdict(scenario).items() if k != "targets"},
        "machine": machine(),
        "run_seconds": durations,
        "results": results,
        "targets": target_checks(scenario, results.get("bridge")),
    }


def keep_earlier(report: dict[str, Any], path: Path) -> None:
    """A run of one approach keeps the other's results from the saved file, marked as earlier.

    The seed bot is independent of the product code, so re-running the bridge alone (minutes)
    need not re-run the seed (up to ten minutes a scenario) for the ratio to stay meaningful.
    """
    if not path.exists():
        return
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if earlier.get("scenario") != report["scenario"]:
        return  # a different shape (tokens, rate, interval): not comparable
    for approach, result in earlier.get("results", {}).items():
        if approach in report["results"]:
            continue
        report["results"][approach] = result
        # A result the saved file itself carried over keeps where it was measured.
        carried = earlier.get("earlier", {}).get(approach)
        report.setdefault("earlier", {})[approach] = carried or {
            "revision": earlier.get("machine", {}).get("revision"),
            "run_seconds": earlier.get("run_seconds", {}).get(approach),
            "command": earlier.get("command"),
        }
        if approach in earlier.get("run_seconds", {}):
            report["run_seconds"][approach] = earlier["run_seconds"][approach]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", help="scenario names (see --list)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--approach", choices=("bridge", "seed", "both"), default="both")
    parser.add_argument("--grace", type=float, help="seconds to wait for replies after the streams")
    parser.add_argument("--tokens", type=int, help="reply length (default: the scenario's)")
    parser.add_argument("--rate", type=float, help="tokens per second (default: the scenario's)")
    parser.add_argument("--interval", type=float, help="streaming.edit_interval")
    parser.add_argument("--json", help="write the results here instead of docs/bench/")
    parser.add_argument("--no-save", action="store_true", help="print only")
    parser.add_argument("--keep", help="keep databases, configs and logs in this directory")
    args = parser.parse_args()
    if args.list or not args.scenarios:
        for scenario in SCENARIOS.values():
            print(f"{scenario.name:<18}{scenario.description}")
        return
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)} (see --list)")
    approaches: list[Approach] = ["bridge", "seed"] if args.approach == "both" else [args.approach]
    for name in args.scenarios:
        scenario = SCENARIOS[name].with_pace(args.tokens, args.rate, args.interval)
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
            workdir = Path(args.keep) / name if args.keep else Path(tmp)
            report = asyncio.run(run_scenario(scenario, approaches, workdir, grace=args.grace))
        report["command"] = "python -m bench.platforms " + " ".join(sys.argv[1:])
        path = Path(args.json) if args.json else RESULTS / f"platforms-{name}.json"
        keep_earlier(report, path)
        print_table(scenario, report)
        if not args.no_save:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report, indent=2) + "\n")
            print(f"saved {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
