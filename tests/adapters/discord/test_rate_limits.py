"""429s and tight buckets: text is delayed, never lost or doubled, and the bridge's own writes stay
within what the X-RateLimit-* headers allow."""

from __future__ import annotations

import asyncio

from bridge.domain import Role
from sandbox.llm_server import ScriptedReply
from tests.adapters.discord.conftest import (
    CREATE_ROUTE,
    EDIT_ROUTE,
    BridgeFactory,
    Scene,
    within_fixed_windows,
)
from tests.sandbox.discord_emulator_harness import wait_until

TEXT = " ".join(f"word{i}" for i in range(40)) + "."


async def test_injected_429s_on_edits_delay_the_text_but_never_lose_or_double_it(
    make_bridge: BridgeFactory, scene: Scene
) -> None:
    emu = scene.emu
    async with make_bridge() as bridge:
        emu.inject_429(EDIT_ROUTE, count=3, retry_after=0.3, channel_id=scene.channel_id)
        bridge.llm.script(ScriptedReply(text=TEXT, tokens_per_second=80))
        await bridge.mention("go")
        await bridge.reply_shown(TEXT)
        await bridge.settled()
        rows = await bridge.store.messages(await bridge.chat_id())

    assert [m.content for m in bridge.bot_messages()] == [TEXT]
    assert emu.stats.rate_limited_by_route[EDIT_ROUTE] == 3 and emu.stats.violations == 0
    # The 429s reached the scheduler (discord.py did not retry them behind its back): the reply
    # counted them, and the next edit waited Retry-After and carried the latest text.
    [reply] = [m for m in rows if m.role is Role.ASSISTANT]
    assert reply.content == TEXT and reply.metadata["rate_limited"] == 3
    edits = [r for r in bridge.writes() if r.route == EDIT_ROUTE]
    assert [r.json["content"] for r in edits if r.status == 200][-1] == TEXT
    for refused, following in zip(edits, edits[1:], strict=False):
        if refused.status == 429:
            assert following.time - refused.time >= 0.3 - 0.02


async def test_concurrent_edits_in_one_channel_share_a_tight_bucket_without_violations(
    make_bridge: BridgeFactory, scene: Scene
) -> None:
    emu = scene.emu
    # Replies in one channel are one Chat and take turns; three choices of one reply (n=3) are
    # three messages edited at the same time in the channel's one bucket.
    texts = [f"Choice {c}: " + " ".join(f"{c}{i}" for i in range(30)) + "." for c in "abc"]
    # Tighter than Discord's 5 per 5 s: the bridge starts from that guess (which would overshoot
    # this bucket) and must learn this one from the headers.
    emu.set_bucket(EDIT_ROUTE, 3, 2.0)
    async with make_bridge(n=3) as bridge:
        emu.inject_429(EDIT_ROUTE, count=1, retry_after=0.2, channel_id=scene.channel_id)
        bridge.llm.script(ScriptedReply(text=texts, tokens_per_second=30))
        await bridge.mention("three ways please")
        for text in texts:
            await bridge.reply_shown(text)
        await bridge.settled()
        # The next reply in the channel draws on the same, already learned bucket.
        bridge.llm.script(ScriptedReply(text=["x", "y", "z"]))
        await bridge.mention("and again")
        for text in ("x", "y", "z"):
            await bridge.reply_shown(text)
        await bridge.settled()

    assert sorted(m.content for m in bridge.bot_messages()) == sorted([*texts, "x", "y", "z"])
    assert emu.stats.violations == 0
    assert emu.stats.rate_limited_by_route[EDIT_ROUTE] == 1
    admitted = [r for r in bridge.writes() if r.status != 429]
    edits = [r.time for r in admitted if r.route == EDIT_ROUTE]
    creates = [r.time for r in admitted if r.route == CREATE_ROUTE]
    assert within_fixed_windows(edits, limit=3, per=2.0)
    assert within_fixed_windows(creates, limit=5, per=5.0)


async def test_twenty_channels_at_once_stay_within_the_bots_global_limit(
    make_bridge: BridgeFactory, scene: Scene
) -> None:
    """Each channel's bucket holds, but 20 placeholders, 20 first texts and 20 typing indicators
    in the first second are more than Discord's 50 requests/s per bot: every write also draws
    from the bot's global budget, and typing only takes what the texts leave over."""
    emu = scene.emu
    channels = [emu.add_text_channel(scene.guild_id, f"room-{i}") for i in range(20)]
    words = " ".join(["word"] * 12)
    # The replies are asked of the LLM in whatever order the messages were stored: which channel
    # gets which text is not fixed, only that each shows one finished text and none is shown twice.
    texts = {f"Answer number {i}: {words}" for i in range(len(channels))}
    async with make_bridge() as bridge:
        bridge.llm.script(*(ScriptedReply(text=t, tokens_per_second=20) for t in texts))
        await asyncio.gather(*(bridge.mention("hello", channel_id=c) for c in channels))
        finished = [
            await wait_until(
                lambda c=channel: next(
                    (m.content for m in bridge.bot_messages(c) if m.content in texts), None
                )
            )
            for channel in channels
        ]
        await bridge.settled()
    assert set(finished) == texts

    assert emu.stats.violations_by_route["global"] == 0, emu.stats.violations_by_route
    assert emu.stats.rate_limited == 0
    bot = [r.time for r in emu.requests if r.route != "GET /gateway/bot" and r.time is not None]
    assert within_fixed_windows(bot, limit=50, per=1.0)
    # Typing indicators are cosmetic: the ones sent took the window's first eighth, the others
    # waited behind the texts (the placeholders had already answered those users).
    typing = {t.channel_id for t in emu.typing_events}
    assert typing and typing <= set(channels)
