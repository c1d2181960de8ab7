"""Catch-up on Discord: mentions sent while the bot was down, read from the channels' history when
it starts, go to the core like live messages, oldest first; what was answered or stored before,
what is older than the window and what does not call on the bot are left alone. The emulator
serves the history with the real discord.py; the model echoes ("You said: ...")."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.adapters.discord.conftest import Bridge, BridgeFactory, Scene

HISTORY_ROUTE = "GET /channels/{channel_id}/messages"
MINUTES = 10.0


async def caught_up(bridge: Bridge) -> None:
    task = bridge.adapter.catching_up
    assert task is not None, "no catch-up was started"
    await asyncio.wait_for(task, timeout=30)


def history_reads(bridge: Bridge) -> list[str | None]:
    return [r.major for r in bridge.emu.requests if r.route == HISTORY_ROUTE]


def answers(bridge: Bridge, channel_id: int | None = None) -> list[str]:
    return [m.content for m in bridge.bot_messages(channel_id)]


async def test_mentions_sent_while_down_are_answered_once_oldest_first_within_the_window(
    scene: Scene, make_bridge: BridgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    emu, alice, bob = scene.emu, scene.alice, scene.bob
    general = scene.channel_id
    other = emu.add_text_channel(scene.guild_id, "other")
    helper = emu.add_user("helper-bot", bot=True)
    minute = 60.0
    # Sent while no bot listened, each `age` seconds ago.
    await emu.user_message(general, alice, "too old", mention_bot=True, age=(MINUTES + 5) * minute)
    await emu.user_message(general, alice, "first", mention_bot=True, age=6 * minute)
    await emu.user_message(other, bob, "second", mention_bot=True, age=5 * minute)
    await emu.user_message(general, alice, "no mention, just chatter", age=4 * minute)
    await emu.user_message(general, helper, "a bot calling", mention_bot=True, age=3 * minute)
    await emu.user_message(general, bob, "third", mention_bot=True, age=2 * minute)
    thread = await emu.start_thread(general, alice, "a thread")
    await emu.user_message(thread, alice, "fourth, in a thread", mention_bot=True, age=1 * minute)
    quiet = emu.add_text_channel(scene.guild_id, "quiet")

    with caplog.at_level(logging.INFO, logger="adapters.discord.catch_up"):
        async with make_bridge(catch_up_minutes=MINUTES) as bridge:
            await caught_up(bridge)
            await bridge.settled()

    received = [inbound.text for inbound, _ in bridge.core.intake.received]
    assert received == ["first", "second", "third", "fourth, in a thread"]
    assert answers(bridge, general) == ["You said: first", "You said: third"]
    assert answers(bridge, other) == ["You said: second"]
    assert answers(bridge, thread) == ["You said: fourth, in a thread"]
    assert "caught up 4 mention(s) of the last 10 minutes" in caplog.text
    # A channel with nothing since the window began costs no request.
    assert str(quiet) not in history_reads(bridge)


async def test_what_was_answered_before_is_not_answered_again(
    scene: Scene, make_bridge: BridgeFactory
) -> None:
    """The first run answers one mention live; the second run, started after another mention,
    catches up that one only."""
    emu = scene.emu
    async with make_bridge() as first:
        await first.mention("asked live")
        await first.reply_shown("You said: asked live")
        await first.settled()
    await emu.user_message(scene.channel_id, scene.bob, "while down", mention_bot=True, age=30)

    async with make_bridge(catch_up_minutes=MINUTES) as second:
        await caught_up(second)
        await second.settled()
    assert answers(second) == ["You said: asked live", "You said: while down"]


async def test_a_message_stored_before_is_not_answered_again_even_without_a_visible_reply(
    scene: Scene, make_bridge: BridgeFactory
) -> None:
    """With auto_thread the answer is in a thread: nothing in the channel points at the message,
    so the catch-up hands it to the core again, and the store's claim of its event stops it."""
    emu = scene.emu
    async with make_bridge(auto_thread=True) as first:
        asked = await first.mention("opened a thread")
        await first.reply_shown("You said: opened a thread", asked)  # the thread has its id
        await first.settled()
    shown_before = emu.messages(asked)

    async with make_bridge(auto_thread=True, catch_up_minutes=MINUTES) as second:
        await caught_up(second)
        await second.settled()
    assert second.core.intake.origins("opened a thread"), "the catch-up did not hand it over"
    assert emu.messages(asked) == shown_before
    assert len(emu.threads) == 1


async def test_a_caught_up_message_is_judged_with_its_authors_roles(
    scene: Scene, make_bridge: BridgeFactory
) -> None:
    """A message read from history has no member object: the catch-up looks the author up, so
    a denied role still keeps them out."""
    emu = scene.emu
    muted = emu.add_role(scene.guild_id, "muted")
    emu.give_role(scene.guild_id, scene.bob, muted)
    await emu.user_message(scene.channel_id, scene.alice, "from alice", mention_bot=True, age=60)
    await emu.user_message(scene.channel_id, scene.bob, "from bob", mention_bot=True, age=50)

    async with make_bridge(
        catch_up_minutes=MINUTES, access={"denied_roles": [str(muted)]}
    ) as bridge:
        await caught_up(bridge)
        await bridge.settled()
    [origin] = bridge.core.intake.origins("from bob")
    assert origin.roles == frozenset({str(muted)})
    assert answers(bridge) == ["You said: from alice"]


async def test_reads_refused_with_429_wait_for_retry_after_and_go_through_the_scheduler(
    scene: Scene, make_bridge: BridgeFactory
) -> None:
    emu = scene.emu
    await emu.user_message(scene.channel_id, scene.alice, "missed", mention_bot=True, age=60)
    emu.inject_429(HISTORY_ROUTE, count=1, retry_after=0.3, channel_id=scene.channel_id)

    async with make_bridge(catch_up_minutes=MINUTES) as bridge:
        await caught_up(bridge)
        await bridge.settled()
    assert answers(bridge) == ["You said: missed"]
    assert history_reads(bridge) == [str(scene.channel_id)] * 2
    # Both tries were granted by the scheduler, which also took the 429.
    assert bridge.core.scheduler.stats(f"discord:read:{scene.channel_id}") == (2, 1)


async def test_a_sharded_process_catches_up_in_its_own_guilds_only(
    scene: Scene, make_bridge: BridgeFactory
) -> None:
    emu = scene.emu
    mine = emu.add_text_channel(emu.add_guild("Mine", shard=(1, 2)), "general")
    theirs = emu.add_text_channel(emu.add_guild("Theirs", shard=(0, 2)), "general")
    for channel in (mine, theirs):
        await emu.user_message(channel, scene.alice, "while down", mention_bot=True, age=60)

    async with make_bridge(shard_count=2, shard_ids=[1], catch_up_minutes=MINUTES) as bridge:
        await caught_up(bridge)
        await bridge.settled()
    assert answers(bridge, mine) == ["You said: while down"]
    assert answers(bridge, theirs) == []
    assert str(theirs) not in history_reads(bridge)


async def test_without_catch_up_minutes_no_history_is_read(
    scene: Scene, make_bridge: BridgeFactory
) -> None:
    await scene.emu.user_message(scene.channel_id, scene.alice, "missed", mention_bot=True, age=60)
    async with make_bridge() as bridge:
        assert bridge.adapter.catching_up is None
        await bridge.mention("live")
        await bridge.reply_shown("You said: live")
        await bridge.settled()
    assert history_reads(bridge) == []
    assert answers(bridge) == ["You said: live"]
