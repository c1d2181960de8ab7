"""The bot's identity (auth.test) is asked once per workspace, not once per event."""

from __future__ import annotations

import asyncio

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.ingress import Identity
from bridge.ports import RateLimited
from sandbox.llm_server import ScriptedReply
from sandbox.slack_emulator import SlackEmulator
from tests.adapters.slack.conftest import BOT, GENERAL, Factory

THREADS = 20


async def test_auth_test_is_called_once_however_many_events_arrive_at_once(
    make_bridge: Factory, mode: str
) -> None:
    bridge = await make_bridge(mode=mode, native_streaming="never")
    emu = bridge.emu
    assert len(emu.calls_to("auth.test")) == 1  # the start: who the bot is, in which workspace
    bridge.llm.script(*[ScriptedReply(f"Answer {i}.") for i in range(THREADS)])

    # Twenty people mention the bot at the same moment, each in a new thread of one channel:
    # forty events (each mention is also a `message`), then one echo per post and edit.
    roots = await asyncio.gather(
        *(emu.user_message(GENERAL, f"<@{BOT}> question {i}", user=f"U0P{i:03}")
          for i in range(THREADS))
    )  # fmt: skip
    for ts in roots:
        await bridge.reply_done(GENERAL, ts)

    delivered = emu.stats.events_delivered
    assert delivered >= 2 * THREADS
    assert sorted(m.rendered for ts in roots for m in bridge.bot_messages(GENERAL, ts)) == sorted(
        f"Answer {i}." for i in range(THREADS)
    )
    assert len(emu.calls_to("auth.test")) == 1, f"{delivered} events"


async def test_askers_at_once_share_one_call_and_a_failed_one_is_asked_again(
    emu: SlackEmulator,
) -> None:
    identity = Identity(AsyncWebClient(token=emu.identity.bot_token, base_url=emu.api_base_url))
    emu.inject_429("auth.test", 1)
    failed = await asyncio.gather(*(identity.result() for _ in range(10)), return_exceptions=True)
    assert all(isinstance(f, RateLimited) for f in failed)
    assert len(emu.calls_to("auth.test")) == 1

    answers = await asyncio.gather(*(identity.result() for _ in range(10)))
    assert len(emu.calls_to("auth.test")) == 2
    assert {(a.bot_user_id, a.bot_id, a.team_id, a.bot_token) for a in answers} == {
        ("U0BOT", "B0BOT", "T0TEAM", emu.identity.bot_token)
    }
    await identity.result()
    assert len(emu.calls_to("auth.test")) == 2
