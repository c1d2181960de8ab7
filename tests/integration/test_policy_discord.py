"""Admin policy as a Discord admin meets it: a whole bridge (real discord.py against the Discord
emulator, openai against the local LLM server) in a server with a category, channels, a thread
and a role."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox.discord_emulator import DiscordEmulator
from sandbox.llm_server import LLMServer, ScriptedReply
from tests.integration.whole_bridge import base_config, eventually, settled, whole_bridge

TOKEN = "discord-test-token"


@dataclass
class Server:
    emu: DiscordEmulator
    llm: LLMServer
    guild: int
    category: int
    in_category: int  # a text channel in the category
    outside: int  # a text channel in no category
    member: int  # has the role
    stranger: int  # has not
    role: int

    def replies(self, channel: int) -> list[str]:
        return [
            m.content for m in self.emu.messages(channel) if m.author_id == self.emu.bot_user_id
        ]

    def streams(self) -> list[dict[str, object]]:
        return [r for r in self.llm.requests if r.get("stream")]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with (
        DiscordEmulator(token=TOKEN, bot_name="bridge-bot") as emu,
        LLMServer(tick=0.01) as llm,
    ):
        guild = emu.add_guild("Community")
        category = emu.add_category(guild, "Help")
        in_category = emu.add_text_channel(guild, "questions", category=category)
        outside = emu.add_text_channel(guild, "off-topic")
        member, stranger = emu.add_user("member"), emu.add_user("stranger")
        role = emu.add_role(guild, "Verified")
        emu.give_role(guild, member, role)
        yield Server(emu, llm, guild, category, in_category, outside, member, stranger, role)


def config(tmp_path: Path, server: Server, policy: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        base_config(tmp_path / "bridge.db", server.llm.base_url)
        + "[discord]\nenabled = true\n"
        + f'api_base_url = "{server.emu.api_base_url}"\ngateway_url = "{server.emu.gateway_url}"\n'
        + f"command_guilds = [{server.guild}]\nguild_ready_timeout = 0.5\n"
        + policy
    )
    return path


SECRETS = {"CHAT_BRIDGE_DISCORD__TOKEN": TOKEN}


async def test_roles_a_category_and_a_channel_allow_their_channels_and_threads(
    tmp_path: Path, server: Server
) -> None:
    emu = server.emu
    thread = await emu.start_thread(server.in_category, server.member, "a thread")
    policy = (
        f'[access]\nallowed_roles = ["{server.role}"]\nallowed_channels = ["{server.category}"]\n'
    )
    path = config(tmp_path, server, policy)
    async with whole_bridge(path, SECRETS) as bridge:
        # A category id covers its channels, and through them their threads.
        await emu.user_message(server.in_category, server.member, "in the category", True)
        await emu.user_message(thread, server.member, "in its thread", True)
        await eventually(lambda: server.replies(server.in_category) and server.replies(thread))
        # A member without the role, and a channel outside the category: no answer.
        await emu.user_message(server.in_category, server.stranger, "no role", True)
        await emu.user_message(server.outside, server.member, "outside", True)
        await asyncio.sleep(0.5)
        await settled(bridge)
        assert len(server.streams()) == 2 and not server.replies(server.outside)
        assert len(server.replies(server.in_category)) == 1

        # A channel id covers its threads (reloaded: the next message uses it).
        path.write_text(
            path.read_text().replace(f'["{server.category}"]', f'["{server.in_category}"]')
        )
        assert bridge.reloader is not None and await bridge.reloader.reload()
        await emu.user_message(thread, server.member, "still in the thread", True)
        await eventually(lambda: len(server.replies(thread)) == 2)
        await settled(bridge)
        assert len(server.streams()) == 3


async def test_allow_dms_false_leaves_direct_messages_unanswered(
    tmp_path: Path, server: Server
) -> None:
    emu = server.emu
    async with whole_bridge(config(tmp_path, server, "[access]\nallow_dms = false\n"), SECRETS):
        dm = emu.dm_channel(server.member)
        await emu.user_message(dm, server.member, "hello in private")
        await emu.user_message(server.outside, server.member, "hello in public", True)
        await eventually(lambda: server.replies(server.outside))
        await asyncio.sleep(0.3)
        assert server.replies(dm) == [] and len(server.streams()) == 1


async def test_overrides_at_each_level_reach_the_model(tmp_path: Path, server: Server) -> None:
    emu = server.emu
    second = emu.add_text_channel(server.guild, "second", category=server.category)
    thread = await emu.start_thread(server.in_category, server.member, "deep")
    policy = "".join(
        f'[[overrides]]\n{kind} = "{ident}"\nmodel = "{name}-model"\n'
        f'system_prompt = "{name} prompt"\n'
        for kind, ident, name in (
            ("workspace", server.guild, "guild"),
            ("channel", server.category, "category"),
            ("channel", server.in_category, "channel"),
            ("thread", thread, "thread"),
        )
    )
    async with whole_bridge(config(tmp_path, server, policy), SECRETS) as bridge:
        for channel in (server.outside, second, server.in_category, thread):
            await emu.user_message(channel, server.member, "which settings?", True)
            await eventually(lambda c=channel: server.replies(c))
            await settled(bridge)
        seen = [(r["model"], r["messages"][0]["content"]) for r in server.streams()]  # type: ignore[index]
        assert seen == [
            ("guild-model", "guild prompt"),
            ("category-model", "category prompt"),
            ("channel-model", "channel prompt"),
            ("thread-model", "thread prompt"),
        ]


async def test_two_llm_slots_answer_six_messages_in_order_of_arrival(
    tmp_path: Path, server: Server
) -> None:
    emu = server.emu
    channels = [emu.add_text_channel(server.guild, f"room-{n}") for n in range(6)]
    server.llm.script(
        *(ScriptedReply(text=f"answer {n} " + "word " * 20, tokens_per_second=40) for n in range(6))
    )
    policy = "[limits]\nllm_concurrent_requests = 2\n"
    async with whole_bridge(config(tmp_path, server, policy), SECRETS) as bridge:
        for number, channel in enumerate(channels):
            await emu.user_message(channel, server.member, f"question {number}", True)
        await eventually(lambda: len(server.streams()) == 6, timeout=30)
        await settled(bridge)
        asked = [r["messages"][-1]["content"] for r in server.streams()]  # type: ignore[index]
        assert asked == [f"question {n}" for n in range(6)]
        assert server.llm.stats.peak_streams_active == 2
        for number, channel in enumerate(channels):
            assert server.replies(channel)[-1].startswith(f"answer {number}")
