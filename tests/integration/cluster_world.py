"""Several `chat-bridge run` processes on one PostgreSQL database with `[cluster]` on, against
the Slack emulator and the local LLM: what the cluster tests start, read and kill."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.llm_server import LLMServer
from sandbox.slack_emulator import SlackEmulator
from storage import migrate
from tests.test_run import ROOT, clean_env

LEASE_SECONDS = 2.0
TAKEOVER_SECONDS = 3.0
SLACK_ENV = {
    "CHAT_BRIDGE_SLACK__BOT_TOKEN": "xoxb-test",
    "CHAT_BRIDGE_SLACK__APP_TOKEN": "xapp-test",
    "CHAT_BRIDGE_SLACK__SIGNING_SECRET": "test-secret",
}


@dataclass
class Instance:
    name: str
    process: asyncio.subprocess.Process
    log: list[str] = field(default_factory=list)
    http_port: int | None = None
    _reader: asyncio.Task[None] | None = None

    def said(self, pattern: str) -> bool:
        return any(re.search(pattern, line) for line in self.log)

    @property
    def text(self) -> str:
        return "\n".join(self.log)

    async def read(self) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:  # read all along: a full pipe would stall it
            self.log.append(line.decode(errors="replace").rstrip())

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()

    async def stop(self) -> int:
        """SIGTERM, then the exit code."""
        if self.process.returncode is None:
            self.process.terminate()
        code = await asyncio.wait_for(self.process.wait(), 40)
        if self._reader is not None:
            await self._reader
        return code


@dataclass
class ClusterWorld:
    emu: SlackEmulator
    llm: LLMServer
    database_url: str
    tmp_path: Path
    instances: list[Instance] = field(default_factory=list)

    async def start(self, name: str, *, http_port: int | None = None, extra: str = "") -> Instance:
        ingress = f'mode = "http"\nhttp_port = {http_port}\n' if http_port else 'mode = "socket"\n'
        config = self.tmp_path / f"{name}.toml"
        config.write_text(
            f'[storage]\nurl = "{self.database_url}"\n'
            f'[llm]\nbase_url = "{self.llm.base_url}"\nmodel = "local"\ntitles = false\n'
            "[streaming]\nedit_interval = 0.2\n"
            f'[slack]\nenabled = true\napi_base_url = "{self.emu.api_base_url}"\n{ingress}'
            f'[cluster]\nenabled = true\ninstance_id = "{name}"\n'
            f"lease_seconds = {LEASE_SECONDS}\ntakeover_seconds = {TAKEOVER_SECONDS}\n"
            "[recovery]\nheartbeat_interval = 1.0\nsweep_interval = 2.0\n"
            '[logging]\nlevel = "INFO"\n' + extra
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "run", "--config", str(config),
            cwd=ROOT, env=clean_env(**SLACK_ENV), stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        instance = Instance(name, process, http_port=http_port)
        instance._reader = asyncio.get_running_loop().create_task(instance.read())
        self.instances.append(instance)
        return instance

    async def holder(self, seconds: float = 30) -> Instance:
        """The instance that holds the workspace's lease (waits until one does)."""
        lease = f"slack:{self.emu.identity.team_id}"
        async with asyncio.timeout(seconds):
            while True:
                holders = [
                    i for i in self.instances
                    if i.process.returncode is None and i.said(f"holds {lease}$")
                    and not i.said(f"{lease} was taken|released .*{lease}")
                ]  # fmt: skip
                if holders:
                    return holders[-1]
                await asyncio.sleep(0.05)

    async def wait_running(self, instance: Instance, seconds: float = 30) -> None:
        async with asyncio.timeout(seconds):
            while not instance.said("running: "):
                if instance.process.returncode is not None:
                    raise AssertionError(f"{instance.name} exited:\n{instance.text}")
                await asyncio.sleep(0.05)

    def bot_replies(self, channel: str, thread_ts: str) -> list[str]:
        return [m.rendered for m in self.emu.thread(channel, thread_ts) if m.bot_id]


@asynccontextmanager
async def cluster_world(postgres_url: str, tmp_path: Path) -> AsyncIterator[ClusterWorld]:
    await migrate(postgres_url)
    async with SlackEmulator() as emu, LLMServer() as llm:
        world = ClusterWorld(emu, llm, postgres_url, tmp_path)
        try:
            yield world
        finally:
            for instance in world.instances:
                instance.kill()
            for instance in world.instances:
                await instance.process.wait()
                if instance._reader is not None:
                    await instance._reader
