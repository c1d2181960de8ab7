"""The platform benchmark harness end to end on its smallest scenario (one conversation, a short
fast reply), for the real `chat-bridge run` and the seed bot, so the harness cannot rot.
Figures are checked for presence and sense, never for speed: the machine is shared."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.platforms import run_scenario
from bench.scenarios import SCENARIOS


@pytest.mark.parametrize("name", ["discord-1", "slack-1"])
async def test_the_smallest_scenario_measures_both_bots(name: str, tmp_path: Path) -> None:
    # Ten tokens: the seed edits once per delta, and Discord lets it edit five times per 5 s.
    scenario = SCENARIOS[name].with_pace(tokens=10, rate=200.0, interval=0.2)

    report = await run_scenario(scenario, ["bridge", "seed"], tmp_path, grace=60.0)

    for approach in ("bridge", "seed"):
        result = report["results"][approach]
        assert result["finished_before_deadline"], approach
        assert result["replies"] == result["replies_complete"] == 1, approach
        for key in ("placeholder_max_s", "first_text_max_s", "first_lag_max_s", "final_lag_max_s"):
            assert result[key] is not None, (approach, key)
        assert result["calls_per_reply"] >= 2, approach  # a placeholder and at least one edit
        # The user's message and the reply are stored at least once each.
        assert result["db_writes_per_reply"] >= 2, approach
        assert result["peak_rss_mb"] > 0 and result["cpu_replies_s"] >= 0, approach
    # The seed commits every delta; the bridge at most once per visible update. Compared on
    # the messages' rows: the bridge's other rows (its event, its chat, the daily and monthly
    # token counters) are a few a reply, more than this one-reply, 13-token run's deltas.
    seed_writes = report["results"]["seed"]["db_writes_per_reply"]
    assert seed_writes >= scenario.tokens

    def message_writes(approach: str, table: str) -> int:
        writes = report["results"][approach]["db_writes"]
        return sum(n for name, n in writes.items() if name.split(".")[0] == table)

    assert message_writes("bridge", "messages") < message_writes("seed", "seed_messages")


def test_a_bridge_only_run_keeps_the_seeds_result_and_where_it_was_measured(
    tmp_path: Path,
) -> None:
    import json

    from bench.platforms import keep_earlier

    scenario = {"name": "slack-1"}
    saved = tmp_path / "platforms-slack-1.json"
    first = {"scenario": scenario, "machine": {"revision": "aaa"}, "run_seconds": {"seed": 9.0}}
    first |= {"results": {"bridge": {"x": 1}, "seed": {"x": 2}}, "command": "both"}
    saved.write_text(json.dumps(first))
    for revision in ("bbb", "ccc"):  # two bridge-only runs in a row
        report = {"scenario": scenario, "machine": {"revision": revision}, "run_seconds": {}}
        report["results"] = {"bridge": {"x": 3}}
        keep_earlier(report, saved)
        saved.write_text(json.dumps(report))
    assert report["results"]["seed"] == {"x": 2}
    assert report["earlier"]["seed"] == {"revision": "aaa", "run_seconds": 9.0, "command": "both"}
