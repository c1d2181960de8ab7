"""The soak of issue #14 on a tiny run (seconds of traffic instead of minutes, short leases, every
fault kept), as its own process as it is run for the figures, so the harness cannot rot and a
fault that loses or doubles a reply shows here first. Skipped, with the reason, without
PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_ENV, _postgres_unavailable, postgres_admin_url

ROOT = Path(__file__).resolve().parents[2]


def postgres_admin() -> str:
    """The suite's PostgreSQL (tests/conftest.py), as the plain URL the soak takes."""
    url = postgres_admin_url()
    if url is None:
        pytest.skip(f"the soak needs PostgreSQL: {POSTGRES_ENV} is empty")
    reason = asyncio.run(_postgres_unavailable(url))
    if reason is not None:
        pytest.skip(f"the soak needs PostgreSQL, not reachable at {url} ({reason}); "
                    f"set {POSTGRES_ENV}")  # fmt: skip
    return url.replace("postgresql+asyncpg://", "postgresql://")


def test_a_short_soak_with_every_fault_loses_and_doubles_nothing(tmp_path: Path) -> None:
    admin = postgres_admin()
    saved = tmp_path / "soak.json"
    command = [
        sys.executable, "-m", "bench.soak", "--seconds", "14", "--rate", "2",
        "--tokens", "40", "--token-rate", "20", "--lease-seconds", "2", "--takeover-seconds", "3",
        "--restart-after", "1", "--db-pause", "1.5", "--db-cut", "1", "--warmup", "5",
        "--sample-every", "2", "--settle", "20", "--linger", "1", "--postgres", admin,
        "--workdir", str(tmp_path / "run"), "--json", str(saved),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    result = json.loads(saved.read_text())
    faults = {fault["name"] for fault in result["faults"] if "error" not in fault["detail"]}
    assert {"kill-slack-holder", "kill-discord-holder", "db-pause", "db-cut"} <= faults
    assert {"slack-429-storm", "discord-429-storm", "discord-gateway-drop"} <= faults
    for platform in ("slack", "discord"):
        figures = result["platforms"][platform]
        assert figures["messages_in"] >= 10, platform
        assert figures["duplicates"] == 0, (platform, figures["problems"])
        assert figures["lost"] == 0, (platform, figures["problems"])
        assert figures["mismatch"] == 0, (platform, figures["problems"])
        assert figures["replies_out"] == figures["messages_in"], platform
        assert figures["first_text_s"]["p50"] is not None, platform
    # Both kills were taken over: the victims' replies ended, and later mentions were answered.
    kills = {t["platform"]: t for t in result["takeovers"]}
    assert set(kills) == {"slack", "discord"}
    assert kills["slack"].get("lease_taken_after_s") is not None, kills["slack"]
    for takeover in kills.values():
        assert takeover.get("first_new_text_after_s") is not None, takeover
    # Memory was sampled per process over time, the killed ones and the replacements too.
    samples = {
        name: process["samples"]
        for name, process in result["processes"].items()
        if not process.get("exited_at_start")  # a replacement started while the database was cut
    }
    assert min(samples.values()) >= 1 and max(samples.values()) >= 4, samples
    assert result["rate_limited"]["slack"] and result["rate_limited"]["discord"]
