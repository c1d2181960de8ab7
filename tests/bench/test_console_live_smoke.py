"""The live page's CPU benchmark in miniature (a few short replies, one open page), so that it
cannot rot: every run completes, the page receives the replies' events, and the live path's own
CPU is measured. Figures are checked for presence and sense, never for speed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_live_benchmark_measures_a_page_following_replies(tmp_path: Path) -> None:
    saved = tmp_path / "live.json"
    command = [sys.executable, "-m", "bench.console", "live", "--replies", "4", "--tokens", "30"]
    command += ["--rate", "300", "--watchers", "1", "--rounds", "1", "--port", str(free_port())]
    done = subprocess.run(
        [*command, "--json", str(saved)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]

    report = json.loads(saved.read_text())
    (run,) = report["rounds"]
    assert run["none"]["live_path_cpu_s"] is None and run["none"]["pages_received"] is None
    followed = run["live1"]
    assert followed["replies"] == 4 and followed["streaming_at_once"] >= 1
    assert followed["pages_received"]["events"] >= 4 * 2  # each reply started and ended, at least
    assert followed["live_path_cpu_s"]["feed_s"] > 0 and followed["live_path_cpu_s"]["events_s"] > 0
    assert report["summary"]["live1"]["live_path_cpu_s_median"] > 0
