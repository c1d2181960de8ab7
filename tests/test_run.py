"""`chat-bridge run` as an admin runs it: a real process, configured by a TOML file and secrets in
the environment, answering on the Slack emulator until SIGTERM, then exiting 0."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

from sandbox.discord_emulator import DiscordEmulator
from sandbox.llm_server import LLMServer, ScriptedReply
from sandbox.slack_emulator import SlackEmulator

ROOT = Path(__file__).resolve().parents[1]
ANSWER = "Hello from the bridge, streamed in pieces."


async def poll(condition: Callable[[], object], seconds: float) -> None:
    """Wait for emulator-side state; a cold `python -m bridge` start can take several seconds."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 (the emulator has no event for this state)
            await asyncio.sleep(0.05)


def common_config(db: Path, llm_base_url: str) -> str:
    return (
        f'[storage]\nurl = "sqlite+aiosqlite:///{db}"\n'
        f'[llm]\nbase_url = "{llm_base_url}"\nmodel = "local"\ntitles = false\n'
        "[streaming]\nedit_interval = 0.2\n"
    )


def clean_env(**secrets: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHAT_BRIDGE_", "SLACK_"))}
    return env | {"CHAT_BRIDGE_LLM__API_KEY": "sk-local-test-key"} | secrets


async def stop_with_sigterm(process: asyncio.subprocess.Process) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(process.wait(), timeout=30)
    assert process.stderr is not None
    return code, (await process.stderr.read()).decode()


async def test_run_answers_a_discord_mention_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "bridge.db"
    async with DiscordEmulator(token="discord-test-token") as emu, LLMServer() as llm:
        guild = emu.add_guild("Guild")
        channel = emu.add_text_channel(guild, "general")
        alice = emu.add_user("alice")
        llm.script(ScriptedReply(text=ANSWER, tokens_per_second=40))
        config = tmp_path / "config.toml"
        config.write_text(
            common_config(db, llm.base_url)
            + f'[discord]\nenabled = true\napi_base_url = "{emu.api_base_url}"\n'
            f'gateway_url = "{emu.gateway_url}"\n'
        )
        env = clean_env(CHAT_BRIDGE_DISCORD__TOKEN="discord-test-token")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "run", "--config", str(config),
            cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            await poll(lambda: emu.stats.identifies >= 1, 30)
            await asyncio.sleep(0.5)  # READY, then the guild arrives
            await emu.user_message(channel, alice, "say hello", mention_bot=True)

            await poll(
                lambda: any(
                    m.author_id == emu.bot_user_id and m.content == ANSWER
                    for m in emu.messages(channel)
                ),
                20,
            )
            code, log = await stop_with_sigterm(process)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert code == 0, log
    assert "discord-test-token" not in log
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT role, status, content FROM messages ORDER BY id").fetchall()
    assert rows == [("user", "complete", "say hello"), ("assistant", "complete", ANSWER)]


async def test_run_answers_a_slack_mention_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "bridge.db"
    async with SlackEmulator() as emu, LLMServer() as llm:
        llm.script(ScriptedReply(text=ANSWER, tokens_per_second=40))
        config = tmp_path / "config.toml"
        config.write_text(
            common_config(db, llm.base_url)
            + f'[slack]\nenabled = true\nmode = "socket"\napi_base_url = "{emu.api_base_url}"\n'
        )
        env = clean_env(
            CHAT_BRIDGE_SLACK__BOT_TOKEN="xoxb-test", CHAT_BRIDGE_SLACK__APP_TOKEN="xapp-test"
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "run", "--config", str(config),
            cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            await emu.wait_for_socket(1, timeout=30)
            ts = await emu.user_message("C0GENERAL", "<@U0BOT> say hello", user="U0ALICE")

            def answered() -> bool:
                replies = [m for m in emu.thread("C0GENERAL", ts) if m.bot_id]
                return bool(replies) and not replies[-1].is_streaming and ANSWER in replies[-1].text

            await emu.wait_for(answered, timeout=20)
            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), timeout=30)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.stderr is not None
        log = (await process.stderr.read()).decode()
    assert code == 0, log
    assert "xoxb-test" not in log and "sk-local-test-key" not in log
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT role, status, content FROM messages ORDER BY id").fetchall()
    assert rows == [("user", "complete", "say hello"), ("assistant", "complete", ANSWER)]


async def test_a_token_slack_refuses_exits_with_the_code_for_a_configuration_fault(
    tmp_path: Path,
) -> None:
    """Not 1 (a crash a restart policy retries for ever) but 78, EX_CONFIG: docs/deploy.md."""
    async with SlackEmulator() as emu, LLMServer() as llm:
        config = tmp_path / "config.toml"
        config.write_text(
            common_config(tmp_path / "bridge.db", llm.base_url)
            + f'[slack]\nenabled = true\nmode = "socket"\napi_base_url = "{emu.api_base_url}"\n'
        )
        env = clean_env(
            CHAT_BRIDGE_SLACK__BOT_TOKEN="xoxb-revoked", CHAT_BRIDGE_SLACK__APP_TOKEN="xapp-test"
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "run", "--config", str(config),
            cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        code = await asyncio.wait_for(process.wait(), timeout=60)
        assert process.stderr is not None
        log = (await process.stderr.read()).decode()
    assert code == 78, log
    [line] = [line for line in log.splitlines() if "chat-bridge stopped" in line]
    assert "invalid_auth" in line and "slack.bot_token" in line and "exit code 78" in line
    assert "Traceback" not in log
