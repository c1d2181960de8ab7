"""The busy-channel benchmark end to end, small: the real `chat-bridge run` against the Slack
emulator, several threads started at once in one channel, with Slack's post burst and with
strictly one post a second. Figures are checked for presence and sense, never for speed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench.platforms import run_scenario
from bench.scenarios import SCENARIOS


@pytest.mark.parametrize("name", ["slack-channel-20", "slack-channel-20-strict"])
async def test_threads_started_at_once_in_one_channel_are_all_answered_whole(
    name: str, tmp_path: Path
) -> None:
    # Four threads, short fast replies: the strict channel refuses three posts of the burst.
    scenario = dataclasses.replace(
        SCENARIOS[name].with_pace(tokens=10, rate=200.0, interval=0.2), conversations=4
    )

    report = await run_scenario(scenario, ["bridge"], tmp_path, grace=60.0)

    result = report["results"]["bridge"]
    assert result["finished_before_deadline"]
    assert result["replies"] == result["replies_complete"] == 4
    assert result["replies_incomplete"] == 0
    assert result["first_text_p50_s"] is not None and result["first_text_max_s"] is not None
    assert result["auth_test_calls"] == 1  # the start's, none per event
    strict = scenario.post_limit == "strict"  # and chat.update only; else native streaming
    posts = result["calls_by_method"]["chat.postMessage" if strict else "chat.startStream"]
    refused = result["rate_limited_by_method"].get("chat.postMessage", 0)
    if strict:
        # Up to four posts at once where one fits (how many went before the first 429 was back
        # depends on timing): each refused one is sent again once, and only once.
        assert refused <= 3 and posts == 4 + refused
    else:
        assert refused == 0 and posts == 4
    assert {check["metric"] for check in report["targets"]} >= {"replies_incomplete"}
