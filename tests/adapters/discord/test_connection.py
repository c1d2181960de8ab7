"""Connecting: the privileged message-content intent (close code 4014) and bad tokens end in one
clear line, never a traceback; mention-only mode still answers mentions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import discord.http
import pytest
from pydantic import SecretStr

from adapters.discord import DiscordAdapter, DiscordGatewayError
from bridge.lifecycle import AccessRevoked
from tests.adapters.discord.conftest import BridgeFactory, Scene, adapter_for, discord_settings

INTENT_HINT = "Bot → Privileged Gateway Intents → Message Content Intent"


def hint_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if INTENT_HINT in r.getMessage()]


async def test_without_the_intent_the_bridge_stops_with_one_clear_line(
    scene: Scene, make_core: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    scene.emu.message_content_intent = False
    core = await make_core()
    adapter = adapter_for(scene, core, mention_only_without_intent=False)
    route_base = discord.http.Route.BASE

    with pytest.raises(DiscordGatewayError) as raised:
        await adapter.start()

    assert INTENT_HINT in str(raised.value)
    assert core.lifecycle.failure is raised.value
    [line] = hint_lines(caplog)
    assert line.levelno == logging.ERROR
    assert not [r for r in caplog.records if r.exc_info], "no traceback for a missing intent"
    assert discord.http.Route.BASE == route_base


async def test_without_the_intent_mention_only_mode_answers_mentions(
    make_bridge: BridgeFactory, scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emu = scene.emu
    emu.message_content_intent = False
    async with make_bridge(mention_only_without_intent=True) as bridge:
        assert bridge.adapter.mention_only
        await emu.user_message(scene.channel_id, scene.alice, "not for the bot")
        await bridge.mention("what is the capital of France?")
        await bridge.reply_shown("You said: what is the capital of France?")
        dm = emu.dm_channel(scene.bob)
        await emu.user_message(dm, scene.bob, "a private question")
        await bridge.reply_shown("You said: a private question", dm)
        await bridge.settled()

    asked = [r["messages"][-1]["content"] for r in bridge.llm.requests]
    assert asked == ["what is the capital of France?", "a private question"]
    [line] = hint_lines(caplog)
    assert line.levelno == logging.WARNING and "only mentions and DMs" in line.getMessage()
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_rejected_token_is_one_clear_error(
    scene: Scene, make_core: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    core = await make_core()
    settings = discord_settings(
        api_base_url=scene.emu.api_base_url, gateway_url=scene.emu.gateway_url
    ).model_copy(update={"token": SecretStr("not-the-token")})
    adapter = DiscordAdapter(
        settings,
        responder=core.responder,
        store=core.store,
        lifecycle=core.lifecycle,
        intake=core.intake,
        commands=core.commands,
    )
    # AccessRevoked: the process exits 78, which a restart policy leaves alone (deploy.md).
    with pytest.raises(AccessRevoked, match="token was rejected"):
        await adapter.start()
    assert not [r for r in caplog.records if r.exc_info]
