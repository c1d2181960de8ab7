"""Crash recovery as an admin meets it: `chat-bridge run` killed with SIGKILL mid-reply, then
started again on the same database, against the Slack and Discord emulators.

`recovery.owner_timeout` is set far beyond the test's wait: the restarted process must recognise
its dead predecessor (same host, pid gone) at once, not by the age of a heartbeat.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sandbox.discord_emulator import DiscordEmulator
from sandbox.llm_server import LLMServer, ScriptedReply
from sandbox.slack_emulator import SlackEmulator
from tests.test_run import ROOT, clean_env, common_config, poll, stop_with_sigterm

STORY = " ".join(f"Word{n}" for n in range(400))  # about 20 s at 20 tokens per second
NOTICE = "Reply interrupted: the bridge restarted"
RECOVERY = "[recovery]\nowner_timeout = 3600.0\nheartbeat_interval = 1.0\nsweep_interval = 2.0\n"
SLACK_ENV = {
    "CHAT_BRIDGE_SLACK__BOT_TOKEN": "xoxb-test",
    "CHAT_BRIDGE_SLACK__APP_TOKEN": "xapp-test",
}
DISCORD_TOKEN = "discord-test-token"


@asynccontextmanager
async def bridge_process(config: Path, env: dict[str, str]) -> AsyncIterator[Process]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "run", "--config", str(config),
        cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


Process = asyncio.subprocess.Process


async def kill_hard(process: Process) -> None:
    process.kill()  # SIGKILL: no drain, no notice, nothing saved after this instant
    await process.wait()


def rows(db: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT role, status, content FROM messages ORDER BY id").fetchall()


@dataclass
class DiscordWorld:
    emu: DiscordEmulator
    llm: LLMServer
    channel: int
    alice: int
    config: Path
    env: dict[str, str]

    def bot_texts(self) -> list[str]:
        return [
            m.content
            for m in self.emu.messages(self.channel)
            if m.author_id == self.emu.bot_user_id
        ]

    async def mention_once_connected(self, text: str, sessions: int = 1) -> None:
        await poll(lambda: self.emu.stats.identifies >= sessions, 30)
        await asyncio.sleep(0.5)  # READY, then the guild arrives
        await self.emu.user_message(self.channel, self.alice, text, mention_bot=True)


@asynccontextmanager
async def discord_world(tmp_path: Path, db: Path, first_reply: str) -> AsyncIterator[DiscordWorld]:
    """A guild with one channel and one user; the model's first reply streams at 20 tokens/s."""
    async with DiscordEmulator(token=DISCORD_TOKEN) as emu, LLMServer() as llm:
        channel = emu.add_text_channel(emu.add_guild("Guild"), "general")
        llm.script(ScriptedReply(text=first_reply, tokens_per_second=20))
        config = discord_config(tmp_path, db, emu, llm)
        env = clean_env(CHAT_BRIDGE_DISCORD__TOKEN=DISCORD_TOKEN)
        yield DiscordWorld(emu, llm, channel, emu.add_user("alice"), config, env)


@asynccontextmanager
async def slack_world(
    tmp_path: Path, db: Path
) -> AsyncIterator[tuple[SlackEmulator, LLMServer, Path, dict[str, str]]]:
    """The Slack emulator and a model whose first reply is the long STORY at 20 tokens/s."""
    async with SlackEmulator() as emu, LLMServer() as llm:
        llm.script(ScriptedReply(text=STORY, tokens_per_second=20))
        yield emu, llm, slack_config(tmp_path, db, emu, llm), clean_env(**SLACK_ENV)


async def ask_for_the_story(emu: SlackEmulator) -> str:
    """Once the bridge is connected, mention it in #general; the thread's ts."""
    await emu.wait_for_socket(1, timeout=30)
    return await emu.user_message("C0GENERAL", "<@U0BOT> tell a long story")


def slack_config(tmp_path: Path, db: Path, emu: SlackEmulator, llm: LLMServer) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        common_config(db, llm.base_url)
        + f'[slack]\nenabled = true\nmode = "socket"\napi_base_url = "{emu.api_base_url}"\n'
        + RECOVERY
    )
    return config


def discord_config(tmp_path: Path, db: Path, emu: DiscordEmulator, llm: LLMServer) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        common_config(db, llm.base_url)
        + f'[discord]\nenabled = true\napi_base_url = "{emu.api_base_url}"\n'
        f'gateway_url = "{emu.gateway_url}"\n' + RECOVERY
    )
    return config


async def test_slack_a_reply_cut_by_sigkill_is_finished_in_place_after_the_restart(
    tmp_path: Path,
) -> None:
    db = tmp_path / "bridge.db"
    async with slack_world(tmp_path, db) as (emu, llm, config, env):
        async with bridge_process(config, env) as first:
            ts = await ask_for_the_story(emu)

            def streaming_reply() -> object:
                bots = [m for m in emu.thread("C0GENERAL", ts) if m.bot_id]
                return bots and "Word30" in bots[0].rendered and bots[0]

            await emu.wait_for(streaming_reply, timeout=30)
            await asyncio.sleep(1.0)  # a progress save or two after the text is on screen
            await kill_hard(first)
        reply = [m for m in emu.thread("C0GENERAL", ts) if m.bot_id][0]
        assert reply.is_streaming and emu.status("C0GENERAL", ts) != ""  # as the crash left it

        restarted = asyncio.get_running_loop().time()
        async with bridge_process(config, env) as second:

            def finished() -> bool:
                shown = emu.message("C0GENERAL", reply.ts)
                cleared = emu.status("C0GENERAL", ts) == ""
                return shown is not None and NOTICE in shown.rendered and cleared

            await emu.wait_for(finished, timeout=30)
            took = asyncio.get_running_loop().time() - restarted  # reported, not asserted
            shown = emu.message("C0GENERAL", reply.ts)
            assert shown is not None and not shown.is_streaming
            assert emu.status("C0GENERAL", ts) == ""
            assert [m.ts for m in emu.thread("C0GENERAL", ts) if m.bot_id] == [reply.ts]
            code, log = await stop_with_sigterm(second)
        assert code == 0, log
        print(f"slack: finished {took:.2f}s after the new process started")
    (user, assistant) = rows(db)
    assert user[:2] == ("user", "complete")
    assert assistant[1] == "interrupted" and assistant[2].startswith("Word0 Word1")
    # What the message shows is what was stored, then the notice.
    assert shown.rendered.startswith(assistant[2].rstrip())


async def test_discord_a_reply_cut_by_sigkill_is_finished_in_place_after_the_restart(
    tmp_path: Path,
) -> None:
    db = tmp_path / "bridge.db"
    async with discord_world(tmp_path, db, STORY) as world:
        emu, channel = world.emu, world.channel
        async with bridge_process(world.config, world.env) as first:
            await world.mention_once_connected("tell a long story")
            await poll(lambda: any("Word30" in t for t in world.bot_texts()), 30)
            await asyncio.sleep(1.0)
            await kill_hard(first)
        (reply,) = [m for m in emu.messages(channel) if m.author_id == emu.bot_user_id]
        assert reply.content.endswith("▌")  # the cursor the crash left behind

        restarted = asyncio.get_running_loop().time()
        async with bridge_process(world.config, world.env) as second:

            def current() -> str:
                return next(m.content for m in emu.messages(channel) if m.id == reply.id)

            await poll(lambda: NOTICE in current(), 30)
            took = asyncio.get_running_loop().time() - restarted  # reported, not asserted
            print(f"discord: finished {took:.2f}s after the new process started")
            assert "▌" not in current()
            bots = [m for m in emu.messages(channel) if m.author_id == emu.bot_user_id]
            assert [m.id for m in bots] == [reply.id]
            code, log = await stop_with_sigterm(second)
        assert code == 0, log
    (user, assistant) = rows(db)
    assert user[:2] == ("user", "complete") and assistant[1] == "interrupted"
    assert current().startswith(assistant[2].rstrip())


async def test_slack_messages_queued_behind_a_killed_reply_are_each_answered_once(
    tmp_path: Path,
) -> None:
    db = tmp_path / "bridge.db"
    async with slack_world(tmp_path, db) as (emu, llm, config, env):
        async with bridge_process(config, env) as first:
            ts = await ask_for_the_story(emu)
            await emu.wait_for(
                lambda: any(
                    "Word10" in m.rendered for m in emu.thread("C0GENERAL", ts) if m.bot_id
                ),
                timeout=30,
            )
            for n in range(3):
                await emu.user_message("C0GENERAL", f"follow-up {n}", thread_ts=ts)

            def queued() -> bool:
                return len([r for r in rows(db) if r[0] == "user" and r[1] == "pending"]) == 4

            await poll(queued, 20)  # stored, and waiting behind the streaming reply
            await kill_hard(first)
        answers = [f"Answer to follow-up {n}." for n in range(3)]
        llm.script(*(ScriptedReply(text=a, tokens_per_second=200) for a in answers))

        async with bridge_process(config, env) as second:

            def all_answered() -> bool:
                shown = [m.rendered for m in emu.thread("C0GENERAL", ts) if m.bot_id]
                return all(any(a in s for s in shown) for a in answers)

            await emu.wait_for(all_answered, timeout=40)
            await asyncio.sleep(2 * 2.0)  # two more sweeps: nothing is answered again
            code, log = await stop_with_sigterm(second)
        assert code == 0, log
        bots = [m.rendered for m in emu.thread("C0GENERAL", ts) if m.bot_id]
    assert len(bots) == 4 and NOTICE in bots[0]
    assert [sum(a in b for b in bots) for a in answers] == [1, 1, 1]  # in order, once each
    assert [b for b in bots[1:]] == [b for b in bots[1:] if any(a in b for a in answers)]
    stored = rows(db)
    assert [r[1] for r in stored if r[0] == "user"] == ["complete"] * 4
    assert sorted(r[2] for r in stored if r[0] == "assistant" and r[1] == "complete") == answers
    assert len(llm.requests) == 4  # the cut reply was not asked again


async def test_discord_sigterm_answers_the_reply_in_flight_the_queued_ones_and_a_late_one(
    tmp_path: Path,
) -> None:
    db = tmp_path / "bridge.db"
    short_story = " ".join(f"Word{n}" for n in range(60))  # 3 s at 20 tokens per second
    async with discord_world(tmp_path, db, short_story) as world:
        emu, channel, alice, bot_texts = world.emu, world.channel, world.alice, world.bot_texts
        async with bridge_process(world.config, world.env) as process:
            await world.mention_once_connected("tell a short story")
            await poll(lambda: any("Word5" in t for t in bot_texts()), 30)
            for n in range(2):
                await emu.user_message(channel, alice, f"queued {n}", mention_bot=True)
            await poll(lambda: len([r for r in rows(db) if r[1] == "pending"]) >= 3, 10)
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            # Delivered during the drain: Discord never delivers it again, so it is answered.
            await emu.user_message(channel, alice, "arriving late", mention_bot=True)
            code = await asyncio.wait_for(process.wait(), timeout=60)
            assert process.stderr is not None
            log = (await process.stderr.read()).decode()
        assert code == 0, log
        texts = bot_texts()
    assert texts == [
        short_story,
        "You said: queued 0",
        "You said: queued 1",
        "You said: arriving late",
    ], log
    stored = rows(db)
    assert [r[1] for r in stored if r[0] == "user"] == ["complete"] * 4
    assert [r[1] for r in stored if r[0] == "assistant"] == ["complete"] * 4
