"""The soak's processes: `chat-bridge run` instances (started, killed with SIGKILL, replaced), the
LLM server and the database proxy, with their logs and their memory sampled over time.

Each instance logs to a file of its own (a pipe nobody reads would fill and stall it); the fleet
reads each file's new lines as they come, for the lease lines it times takeovers with.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bench import procstat
from bench.processes import LLM_KEY, ROOT, clean_env, terminate

# "2026-12-03 06:14:05,457 INFO    bridge.cluster.leases: cluster: b holds slack:T0TEAM"
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+)\s+([\w.]+): (.*)$")


@dataclass
class LogLine:
    wall: float  # time.time() of the line's stamp
    level: str
    logger: str
    text: str


@dataclass
class Instance:
    name: str
    platforms: tuple[str, ...]  # "slack", "discord"
    cluster: bool
    config: Path
    log: Path
    process: asyncio.subprocess.Process | None = None
    started_wall: float = 0.0
    started: float = 0.0  # monotonic
    killed: float | None = None  # soak time of the SIGKILL
    exit_code: int | None = None
    ran: bool = False  # said it was running (a start can fail: the database away, say)
    lines: list[LogLine] = field(default_factory=list)
    rss: list[tuple[float, float, float]] = field(default_factory=list)  # (t, rss MB, cpu s)
    _offset: int = 0
    _partial: str = ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None and not self.killed

    def read_new_lines(self) -> list[LogLine]:
        """The lines written since the last call (stamped ones; tracebacks are kept raw)."""
        try:
            with self.log.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        text = self._partial + chunk.decode(errors="replace")
        *complete, self._partial = text.split("\n")
        fresh = []
        for raw in complete:
            found = _STAMP.match(raw)
            if found:
                stamp = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                line = LogLine(stamp, found.group(2), found.group(3), found.group(4))
            else:
                line = LogLine(0.0, "", "", raw)
            fresh.append(line)
        self.lines.extend(fresh)
        return fresh

    def said(self, pattern: str, *, after_wall: float = 0.0) -> LogLine | None:
        compiled = re.compile(pattern)
        for line in self.lines:
            if line.wall >= after_wall and compiled.search(line.text):
                return line
        return None


def instance_config(
    *,
    name: str,
    database_url: str,
    llm_url: str,
    slack: str | None,
    discord: str | None,
    cluster: tuple[float, float] | None,
    overrides: str,
) -> str:
    """The TOML an admin would write; `slack`/`discord`: their sections' bodies, or None."""
    text = (
        f'[storage]\nurl = "{database_url}"\n\n'
        f'[llm]\nbase_url = "{llm_url}"\nmodel = "soak-model"\n'
        # Titles are one more LLM request per conversation; not part of what the soak counts.
        "titles = false\n\n"
        '[logging]\nlevel = "INFO"\n\n'
        # Three processes on one host: the metrics port would clash, and is not measured here.
        "[ops]\nenabled = false\n\n"
    )
    if slack is not None:
        text += f"[slack]\nenabled = true\n{slack}\n"
    if discord is not None:
        text += f"[discord]\nenabled = true\n{discord}\n"
    if cluster is not None:
        lease, takeover = cluster
        text += (
            f'[cluster]\nenabled = true\ninstance_id = "{name}"\n'
            f"lease_seconds = {lease}\ntakeover_seconds = {takeover}\n\n"
        )
    return text + overrides


class Fleet:
    """Every process of a soak run; `sample()` records each live one's RSS and CPU."""

    def __init__(self, workdir: Path, env: dict[str, str], clock_zero: float) -> None:
        self.workdir = workdir
        self.env = clean_env() | env | {"CHAT_BRIDGE_LLM__API_KEY": LLM_KEY}
        self.zero = clock_zero
        self.instances: list[Instance] = []
        self.helpers: dict[str, asyncio.subprocess.Process] = {}
        self.helper_rss: dict[str, list[tuple[float, float, float]]] = {}

    def now(self) -> float:
        return time.monotonic() - self.zero

    async def start(
        self, name: str, config: str, platforms: tuple[str, ...], cluster: bool
    ) -> Instance:
        path = self.workdir / f"{name}.toml"
        log = self.workdir / f"{name}.log"
        await asyncio.to_thread(path.write_text, config)
        instance = Instance(name, platforms, cluster, path, log)
        with log.open("ab") as out:
            instance.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bridge", "run", "--config", str(path),
                cwd=ROOT, env=self.env, stdout=out, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        instance.started_wall = time.time()
        instance.started = self.now()
        self.instances.append(instance)
        return instance

    async def wait_running(self, instance: Instance, seconds: float = 90.0) -> None:
        async with asyncio.timeout(seconds):
            while not instance.said(r"^running: "):
                if not instance.alive:
                    await asyncio.to_thread(instance.read_new_lines)
                    tail = [line.text for line in instance.lines[-30:]] or [""]
                    code = instance.process.returncode if instance.process else None
                    raise RuntimeError(
                        f"{instance.name} exited with {code} before running: {tail[-1]}\n"
                        + "\n".join(tail)
                    )
                await asyncio.to_thread(instance.read_new_lines)
                await asyncio.sleep(0.1)
        instance.ran = True

    def kill(self, instance: Instance) -> None:
        """SIGKILL: no drain, no release of its leases, no goodbye to the platforms."""
        if instance.alive:
            assert instance.process is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(instance.process.pid, signal.SIGKILL)
            instance.killed = self.now()

    async def read_logs(self) -> None:
        await asyncio.to_thread(lambda: [i.read_new_lines() for i in self.instances])

    def sample(self) -> None:
        t = self.now()
        for instance in self.instances:
            if instance.alive:
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    s = procstat.sample(instance.pid)
                    instance.rss.append((round(t, 1), round(s.rss_mb, 1), round(s.cpu_s, 2)))
        for name, process in [*self.helpers.items(), ("harness", None)]:
            pid = os.getpid() if process is None else process.pid
            if process is not None and process.returncode is not None:
                continue
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                s = procstat.sample(pid)
                series = self.helper_rss.setdefault(name, [])
                series.append((round(t, 1), round(s.rss_mb, 1), round(s.cpu_s, 2)))

    async def stop_all(self) -> None:
        """SIGTERM every instance still running (they drain), then the helpers."""
        await asyncio.gather(
            *(terminate(i.process) for i in self.instances if i.alive and i.process is not None)
        )
        for instance in self.instances:
            if instance.process is not None and instance.process.returncode is not None:
                instance.exit_code = instance.process.returncode
        await self.read_logs()
        for process in self.helpers.values():
            if process.stdin is not None:
                with contextlib.suppress(Exception):
                    process.stdin.close()
            await terminate(process)

    # --- helpers: the LLM server and the database proxy ----------------------------------------

    async def start_llm(self, tokens: int, rate: float) -> str:
        log = self.workdir / "llm.jsonl"
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.llm_process", "--tokens", str(tokens),
            "--rate", str(rate), "--log", str(log),
            cwd=ROOT, env=clean_env(), stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self.helpers["llm"] = process
        return (await _first_line(process, "listening on")).rsplit(" ", 1)[1]

    async def start_proxy(self, upstream: str) -> int:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.soak_proxy", "--upstream", upstream,
            cwd=ROOT, env=clean_env(), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self.helpers["db-proxy"] = process
        return int((await _first_line(process, "listening on")).rsplit(" ", 1)[1])

    async def tell_proxy(self, command: str) -> None:
        process = self.helpers["db-proxy"]
        assert process.stdin is not None
        process.stdin.write(f"{command}\n".encode())
        await process.stdin.drain()


async def _first_line(process: asyncio.subprocess.Process, marker: str) -> str:
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
    if marker not in line:
        raise RuntimeError(f"a helper did not start: {line!r}")
    return line
