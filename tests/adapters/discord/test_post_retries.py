"""Posts whose answer was lost after Discord made the message: retried, they still show once.

The emulator makes the message and then answers with a server error; the real discord.py, the
surface and (end to end) the Responder must not leave a second copy behind.
"""

from __future__ import annotations

import discord
import pytest

from adapters.discord.indicators import TypingIndicators
from adapters.discord.ratelimits import RateHeaderCapture
from adapters.discord.surface import DiscordReplySurface, post_nonce
from bridge.ports import PlatformUnavailable
from sandbox.llm_server import ScriptedReply
from tests.adapters.discord.conftest import CREATE_ROUTE, Bridge, BridgeFactory

TEXT = " ".join(f"word{i}" for i in range(60)) + "."


def creates(bridge: Bridge) -> list[tuple[int, str, bool]]:
    """(status, nonce, enforce_nonce) of the bot's message creates in the channel."""
    return [
        (r.status, r.json["nonce"], r.json["enforce_nonce"])
        for r in bridge.writes()
        if r.route == CREATE_ROUTE
    ]


async def test_a_reply_whose_first_post_was_made_then_answered_500_shows_once(
    make_bridge: BridgeFactory,
) -> None:
    async with make_bridge() as bridge:
        emu = bridge.emu
        emu.inject_server_error(CREATE_ROUTE, channel_id=bridge.channel_id, applied=True)
        bridge.llm.script(ScriptedReply(text=TEXT, tokens_per_second=100))
        asked = await bridge.mention("tell me something")
        shown = await bridge.reply_shown(TEXT)
        await bridge.settled()

    # discord.py sent the create again after the 500, with the same nonce (the surface's, not one
    # discord.py drew), and Discord answered with the message the first attempt made.
    (failed, nonce, enforced), retried = creates(bridge)
    assert (failed, enforced) == (500, True) and retried == (200, nonce, True)
    assert len(nonce) == 24 and not nonce.isdigit()
    assert [m.id for m in bridge.bot_messages()] == [shown.id]
    assert shown.message_reference is not None
    assert shown.message_reference["message_id"] == str(asked)


async def test_a_post_tried_again_after_an_unclear_failure_gets_its_message_back(
    make_bridge: BridgeFactory,
) -> None:
    async with make_bridge() as bridge:
        emu = bridge.emu
        # Not a mention: the bridge leaves it alone, and the surface below answers it.
        asked = await emu.user_message(bridge.channel_id, bridge.alice, "a question")
        client = bridge.adapter.client
        assert client is not None
        channel = client.get_channel(bridge.channel_id)
        assert isinstance(channel, discord.TextChannel)

        def surface_for(source: discord.Message) -> DiscordReplySurface:
            return DiscordReplySurface(
                source,
                client=client,
                bot_user_id=bridge.bot_id,
                capture=RateHeaderCapture(),
                typing=TypingIndicators(),
                scheduler=bridge.core.scheduler,
            )

        surface = surface_for(await channel.fetch_message(asked))
        # Made, then a 503, which discord.py does not retry: to the writer the post failed.
        emu.inject_server_error(
            CREATE_ROUTE, status=503, channel_id=bridge.channel_id, applied=True
        )
        with pytest.raises(PlatformUnavailable):
            await surface.post("The answer so f", response_number=0)
        # The writer tries the same post again, with the text it has by then.
        first = await surface.post("The answer so far, and more", response_number=0)
        continuation = await surface.post("A continuation", response_number=0)
        other_choice = await surface.post("Another choice", response_number=1)
        # A surface made later for the same message (crash recovery finishing the reply) counts
        # its posts from zero again: they are new posts, not the first surface's back.
        later = surface_for(await channel.fetch_message(asked))
        notice = await later.post("A notice", response_number=0)

    shown = bridge.bot_messages()
    assert [m.content for m in shown] == [
        "The answer so far, and more",
        "A continuation",
        "Another choice",
        "A notice",
    ]
    assert [first.id, continuation.id, other_choice.id, notice.id] == [str(m.id) for m in shown]
    assert shown[0].message_reference is not None and shown[0].edit_count == 1
    key = surface.reply_key
    nonces = [nonce for _, nonce, _ in creates(bridge)]
    assert nonces[:4] == [
        post_nonce(key, 0, 0),
        post_nonce(key, 0, 0),
        post_nonce(key, 0, 1),
        post_nonce(key, 1, 0),
    ]
    assert len(set(nonces)) == 4 and all(len(nonce) <= 25 for nonce in nonces)
