"""Runs the real `chat-bridge run` with an MCP server against an emulated platform, for the tools
benchmark, and returns what it recorded (`bench.tool_figures` turns it into figures).

Fresh emulator, model, MCP server and database per run, as `bench.harness` does for the platform
benchmarks, whose pieces it reuses: the bridge starts, connects, says its MCP server is up and
idles; its CPU is sampled; the user messages go out (all at once, or `wave` at a time, each
wave once the one before it is answered); the run ends when every reply is final in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench import dbcount, procstat
from bench.harness import BOTS, make_world
from bench.processes import (
    ROOT,
    LLMProcess,
    bridge_config,
    clean_env,
    migrate_bridge,
    start_bridge,
    terminate,
    wait_for_line,
)
from bench.procstat import ProcessSample
from bench.records import World
from bench.scenarios import Scenario
from bench.tool_llm import Plan
from bench.tool_server import SERVER_NAME

Transport = Literal["stdio", "http", "none"]
START_TIMEOUT = 90.0  # a loaded two-core machine takes seconds to start Python with the MCP SDK
SETTLE = 1.5
POLL = 0.1
# Reply rows only: a round's stored calls are assistant rows too (tool_step > 0).
FINISHED_SQL = (
    "SELECT count(*) FROM messages WHERE role = 'assistant' AND tool_step = 0 "
    "AND status IN ('complete', 'failed', 'interrupted', 'stopped')"
)
MCP_UP = f"mcp: server '{SERVER_NAME}' is up"


@dataclass(frozen=True, slots=True)
class ToolRun:
    """One measured run: the platform and pace (`scenario`), what the model calls (`plan`), how
    the bridge reaches the MCP server ("none": no [mcp] at all) and how many replies at once."""

    name: str
    scenario: Scenario
    plan: Plan
    transport: Transport
    wave: int = 0  # replies in flight at once; 0: every message at once
    # The first conversations warm the bridge and the server up (the first calls of a session
    # cost more); their replies are left out of the figures, and their rounds shown apart.
    warmup: int = 0
    # Row-counting triggers (DB writes per reply): one more UPDATE per row, inside the bridge's
    # own transactions, so the loop's runs go without them.
    count_writes: bool = True


@dataclass
class Recorded:
    run: ToolRun
    world: World
    db: Path
    user_times: dict[int, float]
    ready: ProcessSample
    end: ProcessSample
    finished: bool
    started_at: float
    helpers_cpu_s: dict[str, float] = field(default_factory=dict)
    load_avg: list[float] = field(default_factory=list)


class ToolLLMProcess(LLMProcess):
    """`bench.tool_llm` as its own process (its timing log is `bench.llm_process`'s)."""

    MODULE = "bench.tool_llm"

    def __init__(self, run: ToolRun, log: Path) -> None:
        super().__init__(run.scenario, log)
        self.plan = run.plan

    def extra_args(self) -> list[str]:
        return self.plan.as_args()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def http_mcp_server() -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """`bench.tool_server --http` on a free port, as a process of its own: its URL and process."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.tool_server", "--http", "--port", str(port),
        cwd=ROOT, env=clean_env(), stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while not await _listening(port):
                if process.returncode is not None:
                    raise RuntimeError(f"the MCP server exited with {process.returncode}")
                await asyncio.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp", process
    finally:
        await terminate(process)


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


def mcp_section(transport: Transport, url: str | None) -> str:
    """The [mcp] tables a person would write for the benchmark's server."""
    if transport == "none":
        return ""
    text = f'\n[[mcp.servers]]\nname = "{SERVER_NAME}"\n'
    if transport == "stdio":
        return text + f'command = "{sys.executable}"\nargs = ["-m", "bench.tool_server"]\n'
    return text + f'url = "{url}"\n'


async def run(spec: ToolRun, workdir: Path) -> Recorded:
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    db = workdir / f"{spec.name}.db"
    for stale in (db, db.with_name(f"{db.name}-wal"), workdir / f"{spec.name}.log"):
        await asyncio.to_thread(stale.unlink, missing_ok=True)
    world = make_world(spec.scenario)
    llm = ToolLLMProcess(spec, workdir / f"{spec.name}-llm.jsonl")
    await asyncio.to_thread(llm.log.unlink, missing_ok=True)
    await world.start()
    try:
        await llm.start()
        try:
            async with contextlib.AsyncExitStack() as stack:
                url, server = None, None
                if spec.transport == "http":
                    url, server = await stack.enter_async_context(http_mcp_server())
                return await _measure(spec, world, llm, db, url, server)
        finally:
            await llm.stop()
    finally:
        await world.stop()


async def _measure(
    spec: ToolRun,
    world: World,
    llm: LLMProcess,
    db: Path,
    url: str | None,
    server: asyncio.subprocess.Process | None,
) -> Recorded:
    config, bot_log = db.with_suffix(".toml"), db.with_suffix(".log")
    text = bridge_config(spec.scenario, world, llm.base_url, db) + mcp_section(spec.transport, url)
    await asyncio.to_thread(config.write_text, text)
    await migrate_bridge(config, world, bot_log)
    if spec.count_writes:
        await asyncio.to_thread(dbcount.install_counters, db)
    process = await start_bridge(config, world, bot_log)
    try:
        async with asyncio.timeout(START_TIMEOUT):
            await wait_for_line(process, bot_log, BOTS["bridge"].ready_marker)
            await world.wait_connected()
            if spec.transport != "none":
                await wait_for_line(process, bot_log, MCP_UP)
        await asyncio.sleep(1.0)  # connection-time chatter passes
        helpers = _helpers(llm, server, process.pid, spec.transport)
        before = {name: procstat.sample(pid).cpu_s for name, pid in helpers.items()}
        harness_before = time.process_time()
        ready = procstat.sample(process.pid)
        started_at = world.clock()
        user_times, finished = await _send_all(spec, world, db)
        await asyncio.sleep(SETTLE)
        end = procstat.sample(process.pid)
        used = {name: procstat.sample(pid).cpu_s - before[name] for name, pid in helpers.items()}
        used["harness"] = time.process_time() - harness_before
    finally:
        code = await terminate(process)
    if code != 0:
        print(f"{spec.name}: the bridge exited with {code}; see {bot_log}", file=sys.stderr)
    await asyncio.to_thread(_dump, db.with_name(f"{spec.name}-records.jsonl"), world, user_times)
    return Recorded(
        run=spec,
        world=world,
        db=db,
        user_times=user_times,
        ready=ready,
        end=end,
        finished=finished,
        started_at=started_at,
        helpers_cpu_s={k: round(v, 2) for k, v in used.items()},
        load_avg=[round(x, 2) for x in os.getloadavg()],
    )


async def _send_all(spec: ToolRun, world: World, db: Path) -> tuple[dict[int, float], bool]:
    """Every conversation's message, a wave at a time; whether every reply ended in time."""
    total = spec.scenario.conversations
    wave = spec.wave or total
    user_times: dict[int, float] = {}
    for first in range(0, total, wave):
        batch = range(first, min(first + wave, total))
        sent = await asyncio.gather(*(world.send(c) for c in batch))
        user_times.update(zip(batch, sent, strict=True))
        # As long as the platform benchmarks allow a burst, plus the rounds' own time.
        deadline = world.clock() + spec.scenario.stream_seconds + 300.0
        if not await _wait_finished(db, batch.stop, deadline, world):
            return user_times, False
    return user_times, True


async def _wait_finished(db: Path, expected: int, deadline: float, world: World) -> bool:
    while await asyncio.to_thread(dbcount.scalar, db, FINISHED_SQL) < expected:
        if world.clock() > deadline:
            return False
        await asyncio.sleep(POLL)
    return True


def _dump(path: Path, world: World, user_times: dict[int, float]) -> None:
    """The raw records, for looking into a surprising figure (kept with --keep)."""
    with path.open("w") as out:
        for conversation, at in user_times.items():
            out.write(json.dumps({"user": conversation, "at": at}) + "\n")
        for write in world.writes:
            out.write(json.dumps({"write": asdict(write)}) + "\n")
        for call in world.calls(0.0):
            out.write(json.dumps({"call": asdict(call)}) + "\n")


def _helpers(
    llm: LLMProcess,
    server: asyncio.subprocess.Process | None,
    bridge_pid: int,
    transport: Transport,
) -> dict[str, int]:
    """The processes beside the bridge whose CPU the run reports: the model, the MCP server."""
    found: dict[str, int] = {}
    if llm.process is not None:
        found["llm_server"] = llm.process.pid
    if server is not None:
        found["mcp_server"] = server.pid
    elif transport == "stdio" and (child := _mcp_child(bridge_pid)) is not None:
        found["mcp_server"] = child
    return found


def _mcp_child(parent: int) -> int | None:
    """The stdio MCP server the bridge started (a child process running bench.tool_server)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == parent and b"bench.tool_server" in (entry / "cmdline").read_bytes():
                return int(entry.name)
    return None


def describe(spec: ToolRun) -> dict[str, Any]:
    s, p = spec.scenario, spec.plan
    return {
        "name": spec.name,
        "platform": s.platform,
        "native_streaming": s.native_streaming if s.platform == "slack" else None,
        "replies": s.conversations - spec.warmup,
        "wave": spec.wave or s.conversations,
        "warmup_replies": spec.warmup,
        "tokens": s.tokens,
        "rate": s.rate,
        "edit_interval": s.edit_interval,
        "transport": spec.transport,
        "plan": {"rounds": list(p.rounds), "tools": list(p.tools), "calls_per_round": p.calls,
                 "slow_seconds": p.seconds},
    }  # fmt: skip
