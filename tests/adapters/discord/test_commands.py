"""/reset: registered on start, answered ephemerally, and the next reply starts without history."""

from __future__ import annotations

from adapters.discord.commands import RESET_DONE
from tests.adapters.discord.conftest import BridgeFactory, Scene, wait_until

EPHEMERAL = 1 << 6


async def test_reset_starts_a_fresh_conversation_and_keeps_the_history(
    make_bridge: BridgeFactory, scene: Scene
) -> None:
    emu = scene.emu
    async with make_bridge() as bridge:
        assert [(c.name, c.guild_id) for c in emu.commands] == [("reset", None)]  # global
        await bridge.mention("first question")
        await bridge.reply_shown("You said: first question")
        await bridge.settled()

        reset = await emu.slash_command(scene.channel_id, scene.bob, "reset")
        await wait_until(lambda: emu.interaction(reset).response_type)

        await bridge.mention("second question")
        await bridge.reply_shown("You said: second question")
        await bridge.settled()
        kept = await bridge.store.messages(await bridge.chat_id())

    answer = emu.interaction(reset)
    assert answer.response_type == 4 and answer.response is not None
    assert answer.response["data"]["content"] == RESET_DONE
    assert answer.response["data"]["flags"] & EPHEMERAL
    after = bridge.llm.requests[-1]
    assert [m["content"] for m in after["messages"] if m["role"] != "system"] == ["second question"]
    # The history stays in the database, only out of the context.
    assert [m.content for m in kept] == [
        "first question",
        "You said: first question",
        "second question",
        "You said: second question",
    ]


async def test_commands_are_registered_in_the_configured_guilds(
    make_bridge: BridgeFactory, scene: Scene
) -> None:
    async with make_bridge(command_guilds=[scene.guild_id]):
        pass
    assert [(c.name, c.guild_id) for c in scene.emu.commands] == [("reset", scene.guild_id)]
