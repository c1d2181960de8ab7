"""A Discord bot in two shards run by two `chat-bridge run` processes on one PostgreSQL database,
as an admin runs a bot too big for one process: each process connects its shard, sees and
answers its shard's guilds only, each message exactly once, and writes within half the bot's
global limit. Against the Discord emulator, which routes dispatches to shards as Discord does."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from sandbox.discord_emulator import DiscordEmulator
from sandbox.llm_server import LLMServer
from storage import migrate
from tests.test_run import ROOT, clean_env, poll

TOKEN = "discord-test-token"
SHARDS = 2


@dataclass
class BridgeProcess:
    """`chat-bridge run`, its log in a file (a pipe that nobody reads could stall it)."""

    name: str
    process: asyncio.subprocess.Process
    log: Path

    @property
    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def said(self, pattern: str) -> bool:
        return re.search(pattern, self.text) is not None

    async def running(self) -> None:
        """Until every service has started (the lifecycle's `running: ...` line)."""
        async with asyncio.timeout(60):
            while not self.said("running: "):
                if self.process.returncode is not None:
                    raise AssertionError(f"{self.name} exited:\n{self.text}")
                await asyncio.sleep(0.05)

    async def stop(self) -> int:
        """SIGTERM, then the exit code."""
        if self.process.returncode is None:
            self.process.terminate()
        return await asyncio.wait_for(self.process.wait(), 40)


@asynccontextmanager
async def bridge_process(config: Path) -> AsyncIterator[BridgeProcess]:
    """Runs the bridge with `config` (the Discord token from the environment) until it is
    running; killed afterwards if still alive."""
    log = config.with_suffix(".log")
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "run", "--config", str(config), cwd=ROOT,
            env=clean_env(CHAT_BRIDGE_DISCORD__TOKEN=TOKEN), stderr=out,
        )  # fmt: skip
    bridge = BridgeProcess(config.stem, process, log)
    try:
        await bridge.running()
        yield bridge
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def shard_config(
    tmp_path: Path, emu: DiscordEmulator, llm: LLMServer, url: str, shard: int,
    *, cluster: bool = False, shards: int = SHARDS, name: str = "",
) -> Path:  # fmt: skip
    name = name or f"shard{shard}"
    config = tmp_path / f"{name}.toml"
    cluster_section = (
        f'[cluster]\nenabled = true\ninstance_id = "{name}"\n'
        "lease_seconds = 2.0\ntakeover_seconds = 3.0\n"
        if cluster
        else ""
    )
    config.write_text(
        f'[storage]\nurl = "{url}"\n'
        f'[llm]\nbase_url = "{llm.base_url}"\nmodel = "local"\ntitles = false\n'
        "[streaming]\nedit_interval = 0.2\n"
        f'[discord]\nenabled = true\napi_base_url = "{emu.api_base_url}"\n'
        f'gateway_url = "{emu.gateway_url}"\nguild_ready_timeout = 0.2\n'
        f"shard_count = {shards}\nshard_ids = [{shard}]\n"
        "[recovery]\nowner_timeout = 3600.0\nheartbeat_interval = 1.0\nsweep_interval = 2.0\n"
        '[logging]\nlevel = "INFO"\n' + cluster_section
    )
    return config


async def writers(database_url: str, replies: int) -> dict[tuple[str, str], int]:
    """(role, content) of each stored message -> the pid of the process that wrote it, once
    `replies` replies are complete."""
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    query = (
        "SELECT m.role, m.content, m.status, o.pid FROM messages m JOIN owners o ON o.id = m.owner"
    )
    try:
        async with asyncio.timeout(30):
            while True:
                rows = await conn.fetch(query)
                done = [r for r in rows if r["role"] == "assistant" and r["status"] == "complete"]
                if len(done) >= replies:
                    break
                await asyncio.sleep(0.05)
    finally:
        await conn.close()
    found: dict[tuple[str, str], int] = {}
    for row in rows:
        key = (row["role"], row["content"])
        assert key not in found, f"stored twice: {key}"
        found[key] = row["pid"]
    return found


@pytest.mark.parametrize("cluster", [False, True], ids=["static", "cluster"])
async def test_two_processes_each_answer_the_guilds_of_their_own_shard_exactly_once(
    postgres_url: str, tmp_path: Path, cluster: bool
) -> None:
    await migrate(postgres_url)
    async with DiscordEmulator(token=TOKEN) as emu, LLMServer() as llm, AsyncExitStack() as stack:
        # Two guilds on each shard, a channel in each, and one mention per channel.
        asked = {
            f"shard {shard}, guild {n}": (
                shard,
                emu.add_text_channel(emu.add_guild(f"S{shard}G{n}", shard=(shard, SHARDS)), "chat"),
            )
            for shard in range(SHARDS)
            for n in range(2)
        }
        alice = emu.add_user("alice")

        def replies(channel: int) -> list[str]:
            return [m.content for m in emu.messages(channel) if m.author_id == emu.bot_user_id]

        processes = [
            await stack.enter_async_context(
                bridge_process(
                    shard_config(tmp_path, emu, llm, postgres_url, shard, cluster=cluster)
                )
            )
            for shard in range(SHARDS)
        ]
        assert sorted(emu.connected_shards, key=str) == [(0, 2), (1, 2)]
        for text, (_, channel) in asked.items():
            await emu.user_message(channel, alice, text, mention_bot=True)
        await poll(lambda: all(f"You said: {t}" in replies(c) for t, (_, c) in asked.items()), 60)
        stored = await writers(postgres_url, len(asked))
        codes = [await process.stop() for process in processes]
        answered = {text: replies(channel) for text, (_, channel) in asked.items()}

    assert codes == [0, 0], "\n".join(p.text for p in processes)
    pids = [process.process.pid for process in processes]
    for text, (shard, _) in asked.items():
        assert answered[text] == [f"You said: {text}"]  # once, and finished
        # Stored (the user's message and the reply) by the process that has the guild's shard.
        assert stored[("user", text)] == pids[shard], text
        assert stored[("assistant", f"You said: {text}")] == pids[shard], text
    assert len(llm.requests) == len(asked)
    for shard, process in enumerate(processes):
        assert process.said(
            rf"discord: connected shard {shard} of 2 \(2 guilds\); this process's share of the "
            r"global limit: 25 requests/s, replies draw from 22 per 1.25s"
        ), process.text
        if cluster:  # each holds the lease of the shard it connects, and only that one
            assert process.said(rf"holds discord:shard:{shard}\n"), process.text
            assert not process.said(rf"holds discord:shard:{1 - shard}\n"), process.text
    assert emu.stats.requests["GET /gateway/bot"] == 0
    assert emu.stats.violations == 0


async def test_two_processes_on_one_shard_answer_once_and_the_survivor_takes_over(
    postgres_url: str, tmp_path: Path
) -> None:
    """With [cluster], two processes may connect the same shard (a standby, a rolling deploy):
    both receive every message, the holder of the shard's lease answers it, and when the holder
    dies the other takes the lease and answers what comes next."""
    await migrate(postgres_url)
    async with DiscordEmulator(token=TOKEN) as emu, LLMServer() as llm, AsyncExitStack() as stack:
        channel = emu.add_text_channel(emu.add_guild("Guild"), "chat")
        alice = emu.add_user("alice")

        def replies() -> list[str]:
            return [m.content for m in emu.messages(channel) if m.author_id == emu.bot_user_id]

        first = await stack.enter_async_context(bridge_process(
            shard_config(tmp_path, emu, llm, postgres_url, 0, cluster=True, shards=1, name="one")
        ))  # fmt: skip
        await poll(lambda: first.said(r"holds discord:shard:0\n"), 30)
        second = await stack.enter_async_context(bridge_process(
            shard_config(tmp_path, emu, llm, postgres_url, 0, cluster=True, shards=1, name="two")
        ))  # fmt: skip
        await emu.user_message(channel, alice, "hello both", mention_bot=True)
        await poll(lambda: "You said: hello both" in replies(), 30)
        await asyncio.sleep(1.5)  # room for a second answer, if one were coming
        assert replies() == ["You said: hello both"]
        assert second.said("handed to the holder of discord:shard:0"), second.text

        first.process.kill()
        await first.process.wait()
        await poll(lambda: second.said(r"holds discord:shard:0\n"), 30)
        await emu.user_message(channel, alice, "still there?", mention_bot=True)
        await poll(lambda: "You said: still there?" in replies(), 30)
        await asyncio.sleep(1.0)
        assert replies() == ["You said: hello both", "You said: still there?"]
        assert await second.stop() == 0, second.text
