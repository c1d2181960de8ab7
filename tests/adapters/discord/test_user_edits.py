"""Users editing and deleting their messages on Discord: MESSAGE_UPDATE and MESSAGE_DELETE reach the
core's UserEdits with the Chat the message belongs to, the stored history follows, and nothing is
answered again. Updates that are not edits (link previews) and the bot's own edits are left out."""

from __future__ import annotations

import asyncio

from adapters.discord.events import chat_key
from bridge.domain import ChatKey, Role
from bridge.edits import EditOutcome
from sandbox.llm_server import ScriptedReply
from tests.adapters.discord.conftest import Bridge, BridgeFactory, wait_until


async def sentinel(bridge: Bridge) -> None:
    """One more answered round trip, in a DM (the channel's edit bucket may be spent): every
    event dispatched before it has been handled."""
    dm = bridge.emu.dm_channel(bridge.alice)
    await bridge.emu.user_message(dm, bridge.alice, "sentinel")
    await bridge.reply_shown("You said: sentinel", dm)
    await bridge.settled()


async def stored(bridge: Bridge, chat: ChatKey, message_id: int) -> None:
    for _ in range(1000):
        if await bridge.store.find_message(chat, str(message_id)) is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"message {message_id} was not stored")


async def test_an_edit_of_an_answered_message_changes_the_history_without_a_new_answer(
    make_bridge: BridgeFactory,
) -> None:
    async with make_bridge() as bridge:
        emu = bridge.emu
        asked = await bridge.mention("what is 2+2?")
        await bridge.reply_shown("You said: what is 2+2?")
        await bridge.settled()
        await emu.edit_user_message(bridge.channel_id, asked, f"<@{bridge.bot_id}> what is 3+3?")
        await wait_until(lambda: bridge.core.edits.edits or None)
        await sentinel(bridge)
        history = await bridge.store.messages(await bridge.chat_id())

    [(chat, message_id, text, outcome)] = bridge.core.edits.edits
    assert chat == chat_key(bridge.guild_id, bridge.channel_id)
    assert (message_id, text, outcome) == (str(asked), "what is 3+3?", EditOutcome.HISTORY)
    # Answered once; the stored history (what the next turn reads) has the edited question.
    asked_llm = [r["messages"][-1]["content"] for r in bridge.llm.requests]
    assert asked_llm == ["what is 2+2?", "sentinel"]
    assert [m.content for m in history if m.role is Role.USER] == ["what is 3+3?"]


async def test_updates_that_are_not_edits_of_the_text_are_left_alone(
    make_bridge: BridgeFactory,
) -> None:
    async with make_bridge() as bridge:
        emu = bridge.emu
        asked = await bridge.mention("see https://example.com")
        await bridge.reply_shown("You said: see https://example.com")
        await bridge.settled()
        # Discord resolves the link's preview: a MESSAGE_UPDATE, not an edit.
        await emu.resolve_embeds(bridge.channel_id, asked, [{"type": "link", "title": "Example"}])
        # Chatter the bridge never stored, edited.
        chatter = await emu.user_message(bridge.channel_id, bridge.bob, "just talking")
        await emu.edit_user_message(bridge.channel_id, chatter, "just talking, edited")
        await sentinel(bridge)

    # The bot's own edits (its streaming) and the preview are not passed on; the chatter's edit
    # is, and the core knows nothing of it.
    assert [(m, outcome) for _, m, _, outcome in bridge.core.edits.edits] == [
        (str(chatter), EditOutcome.UNKNOWN)
    ]


async def test_a_deleted_message_leaves_the_history(make_bridge: BridgeFactory) -> None:
    async with make_bridge() as bridge:
        emu = bridge.emu
        asked = await bridge.mention("forget this")
        await bridge.reply_shown("You said: forget this")
        await bridge.settled()
        await emu.delete_user_message(bridge.channel_id, asked)
        await wait_until(lambda: bridge.core.edits.deletions or None)
        await bridge.mention("next question")
        await bridge.reply_shown("You said: next question")
        await bridge.settled()

    [(chat, message_id, found)] = bridge.core.edits.deletions
    assert (chat, message_id, found) == (
        chat_key(bridge.guild_id, bridge.channel_id), str(asked), True,
    )  # fmt: skip
    # The next turn no longer sees the deleted question (its answer stays).
    users = [m["content"] for m in bridge.llm.requests[-1]["messages"] if m["role"] == "user"]
    assert users == ["next question"]


async def test_with_auto_thread_the_question_is_edited_in_its_threads_chat(
    make_bridge: BridgeFactory,
) -> None:
    async with make_bridge(auto_thread=True) as bridge:
        emu = bridge.emu
        asked = await bridge.mention("first version")
        await bridge.reply_shown("You said: first version", channel_id=asked)
        await bridge.settled()
        await emu.edit_user_message(bridge.channel_id, asked, f"<@{bridge.bot_id}> second version")
        await wait_until(lambda: bridge.core.edits.edits or None)
        await emu.delete_user_message(bridge.channel_id, asked)
        await wait_until(lambda: bridge.core.edits.deletions or None)

    thread_chat = chat_key(bridge.guild_id, asked)
    [(chat, _, text, outcome)] = bridge.core.edits.edits
    assert (chat, text, outcome) == (thread_chat, "second version", EditOutcome.HISTORY)
    [(chat, _, found)] = bridge.core.edits.deletions
    assert chat == thread_chat and found


async def test_a_question_edited_while_it_waits_is_answered_as_edited(
    make_bridge: BridgeFactory,
) -> None:
    async with make_bridge() as bridge:
        emu = bridge.emu
        bridge.llm.script(ScriptedReply(text="a slow first answer " * 20, tokens_per_second=60))
        await bridge.mention("first")
        await wait_until(lambda: bridge.llm.requests or None)
        waiting = await bridge.mention("second, with a typo")
        chat = chat_key(bridge.guild_id, bridge.channel_id)
        await stored(bridge, chat, waiting)  # as it arrives; answered after "first"
        await emu.edit_user_message(bridge.channel_id, waiting, f"<@{bridge.bot_id}> second")
        await bridge.reply_shown("You said: second")
        await bridge.settled()

    [(_, _, _, outcome)] = bridge.core.edits.edits
    assert outcome is EditOutcome.BEFORE_ANSWER
    assert [r["messages"][-1]["content"] for r in bridge.llm.requests] == ["first", "second"]
