"""Starting and stopping the processes of a run: the LLM server, the bridge and the seed bot.

Each bot is its own process so its CPU and peak RSS (from /proc) are its alone; the emulators stay
in the harness. Secrets go through the environment, as an admin would pass them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

from bench.figures import StreamTiming
from bench.records import World
from bench.scenarios import Scenario
from bridge.config import Settings

ROOT = Path(__file__).resolve().parents[1]
LLM_KEY = "sk-bench-local-key"
BRIDGE_READY = "running: "  # the lifecycle's line once every service has started
SEED_READY = "seed ready"
STOP_GRACE = 30.0  # seconds from SIGTERM to SIGKILL


def clean_env() -> dict[str, str]:
    """The harness's environment without anything that would configure a bot behind our back."""
    prefixes = ("CHAT_BRIDGE_", "SLACK_", "DISCORD_", "OPENAI_", "SEED_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


class LLMProcess:
    """`bench.llm_process` for one run; `streams()` reads its timing log afterwards. A subclass
    may run another module that takes the same options and writes the same log (`MODULE`), with
    options of its own (`extra_args`)."""

    MODULE = "bench.llm_process"

    def __init__(self, scenario: Scenario, log: Path) -> None:
        self.scenario = scenario
        self.log = log
        self.process: asyncio.subprocess.Process | None = None
        self.base_url = ""

    def extra_args(self) -> list[str]:
        return []

    async def start(self) -> None:
        s = self.scenario
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", self.MODULE, "--tokens", str(s.tokens),
            "--rate", str(s.rate), "--log", str(self.log), *self.extra_args(),
            cwd=ROOT, env=clean_env(), stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = (await asyncio.wait_for(self.process.stdout.readline(), 30)).decode()
        if "listening on" not in line:
            raise RuntimeError(f"the LLM server did not start: {line!r}")
        self.base_url = line.rsplit(" ", 1)[1].strip()

    async def stop(self) -> None:
        if self.process is not None:
            await terminate(self.process)

    def streams(self) -> dict[int, StreamTiming]:
        found: dict[int, StreamTiming] = {}
        for line in self.log.read_text().splitlines():
            entry = json.loads(line)
            if entry["stream"]:
                found[entry["conversation"]] = StreamTiming(entry["received"], entry["done"])
        return found


def bridge_config(scenario: Scenario, world: World, llm_url: str, db: Path) -> str:
    """The TOML file a person would write to point `chat-bridge run` at these emulators."""
    text = (
        f'[storage]\nurl = "sqlite+aiosqlite:///{db}"\n\n'
        f'[llm]\nbase_url = "{llm_url}"\nmodel = "bench-model"\nn = {scenario.n}\n'
        # Titles are one more (non-streamed) request per conversation; left out of the measure.
        "titles = false\n\n"
        f"[streaming]\nedit_interval = {scenario.edit_interval}\n\n"
        f"{world.bridge_section()}\n"
        '[logging]\nlevel = "INFO"\n'
    )
    ops = Settings.model_fields.get("ops")
    if ops is not None and "enabled" in getattr(ops.annotation, "model_fields", {}):
        # The metrics/health endpoint listens on a port; not part of what is measured here.
        text += "\n[ops]\nenabled = false\n"
    return text


async def start_bridge(config: Path, world: World, log: Path) -> asyncio.subprocess.Process:
    env = clean_env() | world.bridge_env() | {"CHAT_BRIDGE_LLM__API_KEY": LLM_KEY}
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "run", "--config", str(config),
            cwd=ROOT, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip


async def migrate_bridge(config: Path, world: World, log: Path) -> None:
    """Create the schema first, so the row counters can be installed before the bridge runs."""
    env = clean_env() | world.bridge_env() | {"CHAT_BRIDGE_LLM__API_KEY": LLM_KEY}
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "migrate", "--config", str(config),
            cwd=ROOT, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    if await process.wait() != 0:
        raise RuntimeError(f"chat-bridge migrate failed; see {log}")


async def start_seed(
    scenario: Scenario, world: World, llm_url: str, db: Path, log: Path
) -> asyncio.subprocess.Process:
    env = clean_env() | world.seed_env() | {"OPENAI_API_KEY": LLM_KEY}
    args = [*world.seed_args(), "--llm", llm_url, "--db", str(db), "--n", str(scenario.n)]
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.seed_bot", *args,
            cwd=ROOT, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip


async def wait_for_line(process: asyncio.subprocess.Process, log: Path, marker: str) -> None:
    """Until `marker` appears in the process's log (callers bound the wait); fails with the
    log's tail if the process exits first."""
    while marker not in (text := await asyncio.to_thread(log.read_text, errors="replace")):
        if process.returncode is not None:
            tail = "\n".join(text.splitlines()[-25:])
            raise RuntimeError(f"the bot exited before {marker!r}; its log ends:\n{tail}")
        await asyncio.sleep(0.05)


async def terminate(process: asyncio.subprocess.Process) -> int:
    """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode
