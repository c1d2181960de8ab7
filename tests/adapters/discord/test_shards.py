"""Shards on Discord: the adapter connects exactly its shards of the bot's gateway (their guilds;
shard 0 also the DMs) and writes within its shards' share of the bot's global limit. Against the
emulator, which routes dispatches to shards as Discord does, with the real discord.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from adapters.discord.shards import ShardPlan
from bridge.ports import RateBucket
from sandbox.llm_server import ScriptedReply
from tests.adapters.discord.conftest import BridgeFactory, Scene, discord_settings

ANSWER = "Answered on my shard."
COMMANDS_ROUTE = "PUT /applications/{application_id}/commands"


def two_guilds(scene: Scene) -> tuple[int, int]:
    """A text channel in a guild on shard 0 and one in a guild on shard 1 (of 2)."""
    emu = scene.emu
    return (
        emu.add_text_channel(emu.add_guild("Zero", shard=(0, 2)), "general"),
        emu.add_text_channel(emu.add_guild("One", shard=(1, 2)), "general"),
    )


def record_global_buckets(scheduler: Any) -> list[RateBucket]:
    """Every global budget a write of the scheduler waits in (the scheduler keeps working)."""
    seen: list[RateBucket] = []
    acquire: Callable[..., Awaitable[None]] = scheduler.acquire

    async def recording(spec: RateBucket, *args: Any, **kwargs: Any) -> None:
        if spec.key.startswith("discord:global:"):
            seen.append(spec)
        await acquire(spec, *args, **kwargs)

    scheduler.acquire = recording
    return seen


async def test_a_process_with_shard_1_of_2_sees_and_answers_only_the_guilds_of_shard_1(
    scene: Scene, make_bridge: BridgeFactory
) -> None:
    emu = scene.emu
    on_zero, on_one = two_guilds(scene)
    async with make_bridge(shard_count=2, shard_ids=[1]) as bridge:
        assert emu.connected_shards == [(1, 2)] and bridge.adapter.shard_ids == (1,)
        client = bridge.adapter.client
        assert client is not None
        assert {(g.id >> 22) % 2 for g in client.guilds} == {1}
        bridge.llm.script(ScriptedReply(text=ANSWER))
        await bridge.mention("for shard zero", channel_id=on_zero)
        await bridge.mention("for shard one", channel_id=on_one)
        await bridge.reply_shown(ANSWER, on_one)
        await bridge.settled()
    # Dispatched in order: had the shard-0 guild's message reached this process, it would have
    # been handed to the core before the other one.
    assert bridge.core.intake.origins("for shard zero") == []
    assert not bridge.bot_messages(on_zero)
    # The shard count is configured: no GET /gateway/bot; commands are shard 0's process's job.
    assert emu.stats.requests["GET /gateway/bot"] == 0
    assert emu.stats.requests[COMMANDS_ROUTE] == 0


async def test_one_process_with_both_shards_answers_both_guilds_and_the_dms(
    scene: Scene, make_bridge: BridgeFactory
) -> None:
    emu = scene.emu
    on_zero, on_one = two_guilds(scene)
    dm = emu.dm_channel(scene.alice)
    async with make_bridge(shard_count=2) as bridge:
        assert sorted(emu.connected_shards, key=str) == [(0, 2), (1, 2)]
        bridge.llm.script(*[ScriptedReply(text=ANSWER)] * 3)
        for channel in (on_zero, on_one):
            await bridge.mention("which shard?", channel_id=channel)
        await emu.user_message(dm, scene.alice, "and a DM")
        for channel in (on_zero, on_one, dm):
            await bridge.reply_shown(ANSWER, channel)
        await bridge.settled()
    assert emu.stats.requests[COMMANDS_ROUTE] == 1  # registered once, by shard 0's process


async def test_without_the_intent_a_sharded_process_falls_back_to_mentions_only(
    scene: Scene, make_bridge: BridgeFactory
) -> None:
    emu = scene.emu
    emu.message_content_intent = False
    _, on_one = two_guilds(scene)
    async with make_bridge(
        shard_count=2, shard_ids=[1], mention_only_without_intent=True
    ) as bridge:
        assert bridge.adapter.mention_only and bridge.adapter.connected
        assert emu.connected_shards == [(1, 2)]
        await bridge.mention("still here?", channel_id=on_one)
        await bridge.reply_shown("You said: still here?", on_one)
        await bridge.settled()


async def test_without_shards_the_gateway_is_joined_as_before(
    scene: Scene, make_bridge: BridgeFactory
) -> None:
    async with make_bridge() as bridge:
        assert scene.emu.connected_shards == [None]  # no `shard` in IDENTIFY
        assert bridge.adapter.global_budget == RateBucket(
            f"discord:global:{bridge.bot_id}", 45, 1.25
        )
    assert scene.emu.stats.requests["GET /gateway/bot"] == 0


async def test_replies_draw_from_the_processes_share_of_the_global_limit(
    scene: Scene, make_bridge: BridgeFactory
) -> None:
    _, on_one = two_guilds(scene)
    async with make_bridge(shard_count=2, shard_ids=[1]) as bridge:
        drawn = record_global_buckets(bridge.core.scheduler)
        bridge.llm.script(ScriptedReply(text=ANSWER, tokens_per_second=50))
        await bridge.mention("hello", channel_id=on_one)
        await bridge.reply_shown(ANSWER, on_one)
        await bridge.settled()
    # Half the bot's shards: half of the 45 writes per 1.25 s the scheduler may spend of
    # Discord's 50 per second.
    share = RateBucket(f"discord:global:{bridge.bot_id}", 22, 1.25)
    assert bridge.adapter.global_budget == share
    assert drawn and set(drawn) == {share}


@pytest.mark.parametrize(
    ("count", "ids", "limit", "described"),
    [
        (1, [], 45, "shard 0 of 1"),
        (2, [0], 22, "shard 0 of 2"),
        (4, [1, 3], 22, "shards 1, 3 of 4"),
        (3, [], 45, "all 3 shards"),
        (100, [7], 1, "shard 7 of 100"),  # at least one request per window
    ],
)
def test_a_process_gets_its_shards_fraction_of_a_budget(
    count: int, ids: list[int], limit: int, described: str
) -> None:
    plan = ShardPlan.of(discord_settings(shard_count=count, shard_ids=ids))
    assert plan.share_of(45) == limit
    assert plan.describe() == described
    assert plan.sharded == (count > 1 or bool(ids))
    assert plan.registers_commands == (0 in plan.ids)
