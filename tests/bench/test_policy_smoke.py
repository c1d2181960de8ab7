"""The policy benchmarks on tiny runs, each in its own process as they are run for the figures
(they tune the garbage collector and malloc of the process they run in), so they cannot rot.
Figures are checked for presence and sense, never for speed: the machine is shared."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_bench(*arguments: str) -> str:
    command = [sys.executable, "-m", *arguments]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_policy_benchmark_measures_every_variant_message_by_message(tmp_path: Path) -> None:
    saved = tmp_path / "policy.json"
    tiny = ["--messages", "8", "--warmup", "2", "--interval", "0.01"]
    tiny += ["--alone-calls", "50", "--alone-repeats", "1"]
    printed = run_bench("bench.policy", *tiny, "--json", str(saved))

    result = json.loads(saved.read_text())
    assert "receive -> first visible text" in printed
    for name in ("none", "large", "quotas", "direct"):
        first_text = result["first_text_ms"][name]
        assert 0 < first_text["p50"] <= first_text["p99"] <= first_text["max"], name
        assert result["cpu_ms"][name]["p50"] > 0, name
    for name in ("none", "large", "quotas"):
        assert 0 < result["intake_us"][name]["p50"] < result["first_text_ms"][name]["max"] * 1000
    assert "direct" not in result["intake_us"]  # the responder alone has no intake
    for name in ("none", "large"):
        alone = result["policy_alone_us"][name]
        assert alone["cold_us"] > 0 and alone["warm_us"] > 0, name
    # The large policy's messages resolve through overrides (workspace, category, channel).
    assert result["policy_alone_us"]["large"]["layers_of_first_message"] >= 3
    assert result["policy_alone_us"]["none"]["layers_of_first_message"] == 0
    assert set(result["cpu_added_ms"]) == {"large_vs_none", "quotas_vs_none", "none_vs_direct"}
    low, high = result["first_text_added_ms"]["large_vs_none"]["p99_95ci"]
    assert low <= high


def test_replies_through_the_intake_with_quotas_are_each_counted_once() -> None:
    printed = run_bench(
        "bench.responder", "--approach", "quotas", "--replies", "5", "--tokens", "5",
        "--rate", "100", "--interval", "0.2",
    )  # fmt: skip

    result = json.loads(printed)
    assert result["approach"] == "quotas" and result["deltas"] == 25
    assert result["replies_counted"] == 5  # one usage write per reply, none lost
    assert result["intake_warnings"] == 0  # every quota was checked against the database
    assert result["db_writes_per_reply"] > 0
