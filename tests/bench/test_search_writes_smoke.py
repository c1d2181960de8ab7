"""The search index's write benchmark in miniature (SQLite), so that it cannot rot: both
configurations run, and the indexed database is the larger. Never checked for speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_write_benchmark_compares_the_index_with_none(tmp_path: Path) -> None:
    saved = tmp_path / "writes.json"
    command = [sys.executable, "-m", "bench.search_writes", "--replies", "6", "--rounds", "2"]
    command += ["--concurrent", "3", "--json", str(saved)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]

    report = json.loads(saved.read_text())
    assert [run["indexed"] for run in report["runs"]] == [True, False, False, True]
    indexed, unindexed = report["median"]["indexed"], report["median"]["unindexed"]
    assert indexed["bytes"] > unindexed["bytes"] > 0
    assert indexed["cpu_ms_per_reply"] > 0 and unindexed["ms_per_reply"] > 0
