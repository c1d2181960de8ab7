"""Tools as users meet them: a whole bridge (the composition root, real discord.py and slack-bolt
against the emulators, openai against the local LLM server) with real MCP servers started by the
test, over stdio and streamable HTTP. The model's calls come from the LLM server's directives
(`[[tool:NAME {json}]]`, see docs/emulators/llm.md)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.app import Bridge
from sandbox.discord_emulator import DiscordEmulator
from sandbox.llm_server import LLMServer
from sandbox.slack_emulator import ShownMessage, SlackEmulator
from tests.adapters.mcp.conftest import TOOL_SERVER, HttpToolServer, free_port
from tests.integration.whole_bridge import base_config, eventually, settled, whole_bridge

TOKEN = "discord-test-token"
DISCORD_SECRETS = {"CHAT_BRIDGE_DISCORD__TOKEN": TOKEN}
# Starting a Python process that imports the MCP SDK takes seconds on a loaded machine.
UP_WITHIN = 60.0


@dataclass
class Discord:
    emu: DiscordEmulator
    llm: LLMServer
    guild: int
    channel: int
    user: int

    def replies(self, channel: int | None = None) -> list[Any]:
        where = self.channel if channel is None else channel
        return [m for m in self.emu.messages(where) if m.author_id == self.emu.bot_user_id]

    def streams(self) -> list[dict[str, Any]]:
        return [r for r in self.llm.requests if r.get("stream")]


@pytest.fixture
async def discord() -> AsyncIterator[Discord]:
    async with (
        DiscordEmulator(token=TOKEN, bot_name="bridge-bot") as emu,
        LLMServer(tick=0.01) as llm,
    ):
        guild = emu.add_guild("Community")
        channel = emu.add_text_channel(guild, "questions")
        user = emu.add_user("member")
        yield Discord(emu, llm, guild, channel, user)


def servers_toml(*servers: dict[str, Any]) -> str:
    text = ""
    for server in servers:
        text += "[[mcp.servers]]\n" + "".join(
            f"{key} = {json.dumps(value)}\n" for key, value in server.items()
        )
    return text


def stdio(name: str = "t", **more: Any) -> dict[str, Any]:
    return {"name": name, "command": _python(), "args": [TOOL_SERVER], **more}


def http(port: int, name: str = "h", **more: Any) -> dict[str, Any]:
    return {"name": name, "url": f"http://127.0.0.1:{port}/mcp", **more}


def _python() -> str:
    import sys

    return sys.executable


def discord_config(tmp_path: Path, world: Discord, more: str = "", **replace: str) -> Path:
    path = tmp_path / "config.toml"
    text = (
        base_config(tmp_path / "bridge.db", world.llm.base_url)
        + "[discord]\nenabled = true\n"
        + f'api_base_url = "{world.emu.api_base_url}"\ngateway_url = "{world.emu.gateway_url}"\n'
        + "guild_ready_timeout = 0.5\n"
        + more
    )
    for old, new in replace.items():
        text = text.replace(old, new)
    path.write_text(text)
    return path


async def tools_up(bridge: Bridge, *names: str) -> None:
    tools = bridge.responder.tools
    assert tools is not None and tools.toolbox is not None
    box = tools.toolbox
    await eventually(
        lambda: {spec.name for spec in box.available(["*"])} >= set(names), timeout=UP_WITHIN
    )


def tool_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in request["messages"] if m.get("role") == "tool"]


async def test_discord_one_call_shows_its_live_status_then_the_answer_and_a_footer(
    tmp_path: Path, discord: Discord
) -> None:
    """stdio server: the status line while the tool runs, the result in the answer, the footer,
    and the round as context of the next turn."""
    emu = discord.emu
    async with whole_bridge(
        discord_config(tmp_path, discord, servers_toml(stdio())), DISCORD_SECRETS
    ) as bridge:
        await tools_up(bridge, "t.slow", "t.echo")
        await emu.user_message(
            discord.channel, discord.user, '[[tool:t.slow {"seconds": 3}]] how long?', True
        )
        # While the tool runs, the placeholder says which tool and (after 5 s) for how long.
        shown = await eventually(
            lambda: [m for m in discord.replies() if "🔧 _Using `t.slow`…_" in m.content]
        )
        assert shown
        await settled(bridge)
        (reply,) = discord.replies()
        assert "Tool results:" in reply.content and "Using" not in reply.content
        assert reply.content.rstrip().endswith("🔧 _Used `t.slow`_")
        first, second = discord.streams()
        assert [t["function"]["name"] for t in first["tools"]][:1] and not tool_messages(first)
        (result,) = tool_messages(second)
        started, ended = map(float, result["content"].split())
        assert ended - started >= 3.0

        # The next turn sends the round back as context (the footer is not sent back).
        await emu.user_message(discord.channel, discord.user, "and what did the tool say?", True)
        await eventually(lambda: len(discord.replies()) == 2)
        await settled(bridge)
        later = discord.streams()[-1]["messages"]
        roles = [m["role"] for m in later if m["role"] != "system"]
        assert roles == ["user", "assistant", "tool", "assistant", "user"]
        assert later[-2]["content"].startswith("Tool results:")
        assert "🔧" not in later[-2]["content"]


async def test_http_server_parallel_calls_and_a_call_that_times_out(
    tmp_path: Path, discord: Discord
) -> None:
    server = HttpToolServer()
    await server.start()
    try:
        more = servers_toml(http(server.port, timeout=2.0))
        async with whole_bridge(discord_config(tmp_path, discord, more), DISCORD_SECRETS) as bridge:
            await tools_up(bridge, "h.slow")
            ask = (
                '[[tool:h.slow {"seconds": 1}]] [[tool:h.slow {"seconds": 1}]] '
                '[[tool:h.slow {"seconds": 30}]] three at once'
            )
            await discord.emu.user_message(discord.channel, discord.user, ask, True)
            await eventually(lambda: discord.replies(), timeout=30)
            await settled(bridge)
            results = [m["content"] for m in tool_messages(discord.streams()[-1])]
            assert len(results) == 3
            (a_start, a_end), (b_start, b_end) = (map(float, r.split()) for r in results[:2])
            assert max(a_start, b_start) < min(a_end, b_end)  # both ran at once
            assert "timed out after 2 s" in results[2]
            (reply,) = discord.replies()
            assert "timed out after 2 s" in reply.content  # the model was told; the reply went on
            stored = bridge.store
            assert stored is not None
    finally:
        await server.stop()


async def test_a_server_down_at_start_is_used_once_it_comes_back(
    tmp_path: Path, discord: Discord
) -> None:
    port = free_port()
    more = servers_toml(http(port))
    async with whole_bridge(discord_config(tmp_path, discord, more), DISCORD_SECRETS) as bridge:
        # Nothing listens: the bridge runs, the reply goes on without tools.
        await discord.emu.user_message(
            discord.channel, discord.user, '[[tool:h.echo {"text": "hi"}]] now?', True
        )
        await eventually(lambda: discord.replies())
        await settled(bridge)
        assert "not offered (offered: none)" in discord.replies()[0].content
        assert "tools" not in discord.streams()[0]
        server = HttpToolServer(port)
        await server.start()
        try:
            await tools_up(bridge, "h.echo")
            await discord.emu.user_message(
                discord.channel, discord.user, '[[tool:h.echo {"text": "back again"}]] now?', True
            )
            await eventually(lambda: len(discord.replies()) == 2)
            await settled(bridge)
            assert "Tool results:\n- back again" in discord.replies()[1].content
        finally:
            await server.stop()


async def test_max_tool_rounds_everyone_in_a_result_and_an_endpoint_without_tools(
    tmp_path: Path, discord: Discord
) -> None:
    emu = discord.emu
    more = servers_toml(stdio())
    config = discord_config(
        tmp_path, discord, more, **{"titles = false\n": "titles = false\nmax_tool_rounds = 2\n"}
    )
    async with whole_bridge(config, DISCORD_SECRETS) as bridge:
        await tools_up(bridge, "t.echo")
        await emu.user_message(
            discord.channel, discord.user, '[[tool-loop:t.echo {"text": "again"}]] loop', True
        )
        await eventually(lambda: discord.replies())
        await settled(bridge)
        assert "stopped after 2 tool rounds" in discord.replies()[0].content
        # 2 rounds with tools, then one that may call none of them.
        assert [r.get("tool_choice", "auto") for r in discord.streams()] == ["auto"] * 2 + ["none"]

        thread = await emu.start_thread(discord.channel, discord.user, "pings")
        await emu.user_message(
            thread, discord.user, '[[tool:t.echo {"text": "@everyone @here <@&123> look"}]]', True
        )
        await eventually(lambda: discord.replies(thread))
        await settled(bridge)
        (reply,) = discord.replies(thread)
        assert "@everyone @here" in reply.content  # shown as text…
        assert not reply.mention_everyone and reply.mentions == ()  # …pinging no one

    # The same bridge on an endpoint that refuses tools: detected once, answered without them.
    no_tools = discord_config(
        tmp_path, discord, more, **{'model = "local"': 'model = "local-no-tools"'}
    )
    before = len(discord.llm.requests)
    async with whole_bridge(no_tools, DISCORD_SECRETS) as bridge:
        await tools_up(bridge, "t.echo")
        for number, text in enumerate(("first without tools", "second without tools"), 1):
            await emu.user_message(discord.channel, discord.user, text, True)
            await eventually(lambda n=number: len(discord.replies()) == 1 + n)
            await settled(bridge)
    asked = discord.llm.requests[before:]
    streamed = [r for r in asked if r.get("stream")]
    assert ["tools" in r for r in streamed] == [True, False, False]  # refused once, then never


# --- Slack -----------------------------------------------------------------------------------

GENERAL = "C0GENERAL"
ALICE = "U0ALICE"


@pytest.fixture
async def slack() -> AsyncIterator[tuple[SlackEmulator, LLMServer]]:
    async with SlackEmulator() as emu, LLMServer(tick=0.01) as llm:
        emu.join(GENERAL, ALICE)
        yield emu, llm


def slack_config(tmp_path: Path, emu: SlackEmulator, llm: LLMServer, native: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        base_config(tmp_path / "bridge.db", llm.base_url)
        + f'[slack]\nenabled = true\nmode = "socket"\napi_base_url = "{emu.api_base_url}"\n'
        + f'native_streaming = "{native}"\n'
        + servers_toml(stdio())
    )
    return path


def slack_secrets(emu: SlackEmulator) -> dict[str, str]:
    return {
        "CHAT_BRIDGE_SLACK__BOT_TOKEN": emu.identity.bot_token,
        "CHAT_BRIDGE_SLACK__APP_TOKEN": emu.identity.app_token,
    }


def bot_replies(emu: SlackEmulator, root: str) -> list[ShownMessage]:
    return [m for m in emu.thread(GENERAL, root) if m.user == emu.identity.bot_user_id]


@pytest.mark.parametrize("native", ["always", "never"])
async def test_slack_shows_a_running_tool_natively_or_in_a_status_line(
    tmp_path: Path, slack: tuple[SlackEmulator, LLMServer], native: str
) -> None:
    emu, llm = slack
    async with whole_bridge(slack_config(tmp_path, emu, llm, native), slack_secrets(emu)) as bridge:
        await tools_up(bridge, "t.slow")
        text = (
            f"<@{emu.identity.bot_user_id}> "
            '[[tool:t.slow {"seconds": 2}]] [[tool:t.echo {"text": "<!everyone> @channel"}]]'
        )
        root = await emu.user_message(GENERAL, text, ALICE)
        if native == "always":
            # Slack's own task cards: one per call, the slow one in progress while it runs.
            running = await eventually(
                lambda: [
                    m
                    for m in bot_replies(emu, root)
                    if any(t.get("status") == "in_progress" for t in m.tasks)
                ]
            )
            assert {t["title"] for t in running[0].tasks} >= {"t.slow"}
        else:
            await eventually(
                lambda: any("Using `t.slow`" in m.rendered for m in bot_replies(emu, root))
            )
        await settled(bridge)
        (reply,) = bot_replies(emu, root)
        if native == "always":
            assert [(t["title"], t["status"]) for t in reply.tasks] == [
                ("t.slow", "complete"),
                ("t.echo", "complete"),
            ]
        assert "Tool results:" in reply.rendered and "Using `t.slow`" not in reply.rendered
        assert re.search(r"Used `t\.slow`, `t\.echo`", reply.rendered)
        # A tool's "<!everyone>" is shown, never a broadcast.
        assert not set(reply.notified) & {"@everyone", "@channel", "@here"}
