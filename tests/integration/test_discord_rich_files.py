"""Files and controls on Discord through a whole bridge (the composition root, real discord.py
against the Discord emulator, openai against the local LLM server): an image question reaches the
model as an image part, is kept past its link's expiry, and a reply is stopped with its button."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from adapters.discord.components import STOP_ID, VOTE_IDS
from adapters.discord.events import chat_key
from bridge.domain import MessageStatus
from sandbox.discord_emulator import DiscordEmulator, FileUpload
from sandbox.llm_server import LLMServer, ScriptedReply
from tests.integration.whole_bridge import base_config, eventually, settled, whole_bridge

TOKEN = "discord-test-token"
SECRETS = {"CHAT_BRIDGE_DISCORD__TOKEN": TOKEN}


@dataclass
class Server:
    emu: DiscordEmulator
    llm: LLMServer
    guild: int
    channel: int
    alice: int

    def replies(self) -> list[Any]:
        return [m for m in self.emu.messages(self.channel) if m.author_id == self.emu.bot_user_id]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with (
        DiscordEmulator(token=TOKEN, bot_name="bridge-bot") as emu,
        LLMServer(tick=0.01) as llm,
    ):
        guild = emu.add_guild("Community")
        channel = emu.add_text_channel(guild, "general")
        yield Server(emu, llm, guild, channel, emu.add_user("alice"))


def config(tmp_path: Path, server: Server) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        base_config(tmp_path / "bridge.db", server.llm.base_url)
        + "[discord]\nenabled = true\n"
        + f'api_base_url = "{server.emu.api_base_url}"\ngateway_url = "{server.emu.gateway_url}"\n'
        + f"command_guilds = [{server.guild}]\nguild_ready_timeout = 0.5\n"
    )
    return path


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), "blue").save(out, format="PNG")
    return out.getvalue()


def image_parts(request: dict[str, Any]) -> int:
    count = 0
    for message in request["messages"]:
        content = message.get("content")
        if isinstance(content, list):
            count += sum(1 for part in content if part.get("type") == "image_url")
    return count


def streams(server: Server) -> list[dict[str, Any]]:
    return [r for r in server.llm.requests if r.get("stream")]


async def test_an_image_question_is_answered_with_the_image_and_kept_after_its_link_expired(
    tmp_path: Path, server: Server
) -> None:
    emu = server.emu
    async with whole_bridge(config(tmp_path, server), SECRETS) as bridge:
        await emu.user_message(
            server.channel, server.alice, "what is in this picture?", mention_bot=True,
            attachments=[FileUpload("screen.png", png())],
        )  # fmt: skip
        await eventually(lambda: len(server.replies()) == 1 and not bridge.responder.in_flight)
        await settled(bridge)
        downloads = list(emu.downloads)
        emu.expire_attachment_links()
        for number, turn in enumerate(("and the colour?", "anything else?"), start=2):
            first = server.replies()[0]
            await emu.user_message(server.channel, server.alice, turn, reply_to=first.id)
            await eventually(lambda number=number: len(streams(server)) >= number)
            await settled(bridge)

    assert [(d.status, d.with_token) for d in downloads] == [(200, False)]
    # Downloaded once, when the message arrived: later turns read the kept copy.
    assert len(emu.downloads) == 1
    assert [image_parts(r) for r in streams(server)] == [1, 1, 1]


async def test_a_reply_is_stopped_with_its_button_and_voted_on(
    tmp_path: Path, server: Server
) -> None:
    emu = server.emu
    server.llm.script(
        ScriptedReply(text=" ".join(f"word{i}" for i in range(400)), tokens_per_second=40)
    )
    async with whole_bridge(config(tmp_path, server), SECRETS) as bridge:
        await emu.user_message(server.channel, server.alice, "go on and on", mention_bot=True)
        reply = await eventually(
            lambda: next(
                (m for m in server.replies() if "word" in m.content and STOP_ID in m.custom_ids()),
                None,
            )
        )
        await emu.click(server.channel, reply.id, server.alice, STOP_ID)
        await eventually(
            lambda: (m := emu.message(reply.id)) and m.custom_ids() == list(VOTE_IDS.values())
        )
        await settled(bridge)
        clicked = await emu.click(server.channel, reply.id, server.alice, VOTE_IDS["up"])
        await eventually(lambda: emu.interaction(clicked).followup_ids)
        answer = await bridge.store.find_message(
            chat_key(server.guild, server.channel), str(reply.id)
        )
        assert answer is not None
        votes = await bridge.store.votes(answer.id)
        stopped = emu.message(reply.id)

    assert stopped is not None and "word0" in stopped.content
    assert "word399" not in stopped.content
    assert answer.status is MessageStatus.STOPPED
    assert votes == {str(server.alice): "up"}


async def test_a_reasoning_model_shows_a_live_thinking_status_and_never_its_reasoning(
    tmp_path: Path, server: Server
) -> None:
    emu = server.emu
    server.llm.script(
        ScriptedReply(
            text="The answer is 42.",
            reasoning="Let me think about the question step by step. SECRET-REASONING " * 20,
            reasoning_as="think",  # a local model's <think> block in the content
            reasoning_seconds=7.0,
        )
    )
    async with whole_bridge(config(tmp_path, server), SECRETS) as bridge:
        await emu.user_message(server.channel, server.alice, "think hard", mention_bot=True)
        await eventually(lambda: server.replies() and not bridge.responder.in_flight, timeout=30)
        await settled(bridge)

    [reply] = server.replies()
    assert reply.content == "The answer is 42."
    # Every text the message showed on its way: the placeholder, the thinking status, the
    # answer; never a word of the reasoning.
    writes = [
        r.json.get("content", "")
        for r in emu.requests
        if r.route in ("POST /channels/{channel_id}/messages",
                       "PATCH /channels/{channel_id}/messages/{message_id}")
        and isinstance(r.json, dict)
    ]  # fmt: skip
    assert not any("SECRET-REASONING" in w or "<think>" in w for w in writes), writes
    statuses = [w for w in writes if w.startswith("thinking…")]
    assert "thinking… 5 s" in statuses, writes
