"""Runs one scenario with one approach (the bridge or the seed) and returns its figures.

Fresh emulator, LLM process and database per run. The bot starts, connects and idles; its CPU is
sampled; every user message goes out at once; the run ends when every reply is final in the
database (or at the deadline); the CPU and peak RSS are sampled again before it is stopped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from bench import dbcount, procstat
from bench.discord_world import DiscordWorld
from bench.figures import RunRecord, figures
from bench.processes import (
    BRIDGE_READY,
    SEED_READY,
    LLMProcess,
    bridge_config,
    migrate_bridge,
    start_bridge,
    start_seed,
    terminate,
    wait_for_line,
)
from bench.records import PlatformCall, World
from bench.reply_text import reply_text
from bench.scenarios import Scenario
from bench.slack_world import SlackWorld
from bench.timelines import Markers, placeholders, rebuild

log = logging.getLogger(__name__)

Approach = Literal["bridge", "seed"]
START_TIMEOUT = 60.0
# After the last reply is final: room for what follows it (typing stops, status clears).
SETTLE = 1.5
POLL = 0.25


@dataclass(frozen=True, slots=True)
class Bot:
    """How to tell an approach's progress from its database, and what it shows besides text."""

    ready_marker: str
    finished_sql: str
    markers: Markers


BOTS: dict[Approach, Bot] = {
    "bridge": Bot(
        BRIDGE_READY,
        "SELECT count(*) FROM messages WHERE role = 'assistant' "
        "AND status IN ('complete', 'failed', 'interrupted')",
        Markers(placeholder="…", cursor=" ▌"),
    ),
    "seed": Bot(
        SEED_READY,
        "SELECT count(*) FROM seed_messages WHERE role = 'assistant' AND status = 'complete'",
        Markers(placeholder="…", cursor=""),
    ),
}


def make_world(scenario: Scenario) -> World:
    if scenario.platform == "discord":
        return DiscordWorld(scenario)
    return SlackWorld(scenario)


async def run(
    scenario: Scenario, approach: Approach, workdir: Path, *, grace: float | None = None
) -> dict[str, Any]:
    """Run and measure; `grace` (seconds after the streams' end) bounds the wait for replies.

    The harness's event loop also runs the emulator, so blocking work (files, SQLite) goes to a
    thread: a stalled loop would show up as platform latency.
    """
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    bot = BOTS[approach]
    db = workdir / f"{approach}.db"
    bot_log = workdir / f"{approach}.log"
    world = make_world(scenario)
    llm = LLMProcess(scenario, workdir / f"{approach}-llm.jsonl")
    for stale in (db, bot_log, llm.log, db.with_name(f"{db.name}-wal")):
        await asyncio.to_thread(stale.unlink, missing_ok=True)  # a kept directory's last run
    await world.start()
    try:
        await llm.start()
        try:
            return await _measure(scenario, approach, bot, world, llm, db, bot_log, grace)
        finally:
            await llm.stop()
    finally:
        await world.stop()


async def _measure(
    scenario: Scenario,
    approach: Approach,
    bot: Bot,
    world: World,
    llm: LLMProcess,
    db: Path,
    bot_log: Path,
    grace: float | None,
) -> dict[str, Any]:
    if approach == "bridge":
        config = db.with_suffix(".toml")
        text = bridge_config(scenario, world, llm.base_url, db)
        await asyncio.to_thread(config.write_text, text)
        await migrate_bridge(config, world, bot_log)
        await asyncio.to_thread(dbcount.install_counters, db)
        process = await start_bridge(config, world, bot_log)
    else:
        process = await start_seed(scenario, world, llm.base_url, db, bot_log)
    try:
        async with asyncio.timeout(START_TIMEOUT):
            await wait_for_line(process, bot_log, bot.ready_marker)
            await world.wait_connected()
        if approach == "seed":
            # The seed creates its tables before it says ready.
            await asyncio.to_thread(dbcount.install_counters, db)
        await asyncio.sleep(1.0)  # let connection-time chatter (command sync, echoes) pass
        ready = procstat.sample(process.pid)
        helpers_before = _helpers_cpu(llm)
        harness_before = time.process_time()

        start = world.clock()
        sent = await asyncio.gather(*(world.send(c) for c in range(scenario.conversations)))
        user_times = dict(enumerate(sent))
        budget = scenario.stream_seconds + (grace if grace is not None else scenario.seed_grace)
        if approach == "bridge":
            budget = max(budget, scenario.stream_seconds + 300.0)
        deadline = start + budget
        finished = await _wait_finished(db, bot.finished_sql, scenario.replies, deadline, world)
        last_write = world.writes[-1].at if world.writes else world.clock()
        await asyncio.sleep(SETTLE)
        end = procstat.sample(process.pid)
        helpers = {k: v - helpers_before.get(k, 0.0) for k, v in _helpers_cpu(llm).items()} | {
            "harness": time.process_time() - harness_before
        }
    finally:
        code = await terminate(process)
    if code != 0:
        log.warning("%s exited with %s; see %s", approach, code, bot_log)

    calls = world.calls(start)
    await asyncio.to_thread(_dump, db.parent, approach, world, calls, user_times)
    texts = {
        (c, k): reply_text(c, k, scenario.tokens)
        for c in range(scenario.conversations)
        for k in range(scenario.n)
    }
    by_place = placeholders(world.writes, scenario.n)
    record = RunRecord(
        scenario=scenario,
        approach=approach,
        user_times=user_times,
        placeholders={world.places[p]: t for p, t in by_place.items() if p in world.places},
        timelines=rebuild(world.writes, world.places, texts, scenario.n, bot.markers),
        texts=texts,
        streams=await asyncio.to_thread(llm.streams),
        calls=calls,
        db_writes=await asyncio.to_thread(dbcount.read_counters, db),
        ready=ready,
        end=end,
        wall_s=last_write - start,
        finished=finished,
        helpers_cpu_s=helpers,
    )
    result = figures(record)
    if isinstance(world, SlackWorld):
        result["auth_test_calls"] = world.identity_calls()
    return result


async def _wait_finished(db: Path, sql: str, expected: int, deadline: float, world: World) -> bool:
    while await asyncio.to_thread(dbcount.scalar, db, sql) < expected:
        if world.clock() > deadline:
            return False
        await asyncio.sleep(POLL)
    return True


def _dump(
    workdir: Path,
    approach: str,
    world: World,
    calls: list[PlatformCall],
    user_times: dict[int, float],
) -> None:
    """The raw records, for looking into a surprising figure (kept with --keep)."""
    with (workdir / f"{approach}-records.jsonl").open("w") as out:
        for conversation, at in user_times.items():
            out.write(json.dumps({"user": conversation, "at": at}) + "\n")
        for write in world.writes:
            out.write(json.dumps({"write": asdict(write)}) + "\n")
        for call in calls:
            out.write(json.dumps({"call": asdict(call)}) + "\n")


def _helpers_cpu(llm: LLMProcess) -> dict[str, float]:
    """The LLM server's CPU: on 2 cores, how much of the machine the helpers took."""
    if llm.process is None or llm.process.returncode is not None:
        return {}
    return {"llm_server": procstat.sample(llm.process.pid).cpu_s}
