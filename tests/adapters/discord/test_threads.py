"""auto_thread: a mention in a text channel opens a public thread where the conversation goes on
without mentions, named after the conversation."""

from __future__ import annotations

from typing import Any

from sandbox.llm_server import ScriptedReply
from tests.adapters.discord.conftest import BridgeFactory, wait_until

TITLE = "Ferry Timetables Explained"


def echo_or_title(request: dict[str, Any]) -> ScriptedReply:
    """Streams echo the last user message; the one non-streaming request is the title."""
    if request.get("stream") is not True:
        return ScriptedReply(text=TITLE)
    users = [m["content"] for m in request["messages"] if m["role"] == "user"]
    return ScriptedReply(text=f"You said: {users[-1]}")


async def test_a_mention_opens_a_thread_that_is_answered_without_mentions(
    make_bridge: BridgeFactory,
) -> None:
    async with make_bridge(auto_thread=True, titles=True) as bridge:
        emu = bridge.emu
        bridge.llm.responder = echo_or_title
        asked = await bridge.mention("when does the ferry leave?")
        [thread] = await wait_until(lambda: emu.threads)
        await bridge.reply_shown("You said: when does the ferry leave?", thread.id)
        await bridge.settled()
        # Named after the conversation once the title is known (the bot opened this thread).
        await wait_until(lambda: emu.threads[0].name == TITLE)

        await emu.user_message(thread.id, bridge.bob, "and on sundays?")
        await bridge.reply_shown("You said: and on sundays?", thread.id)
        await bridge.settled()

    assert thread.id == asked and thread.parent_id == bridge.channel_id
    assert thread.owner_id == bridge.bot_id and thread.type == 11
    # The conversation lives in the thread; the channel only has the user's message.
    assert bridge.bot_messages(bridge.channel_id) == []
    in_thread = bridge.bot_messages(thread.id)
    assert [m.content for m in in_thread] == [
        "You said: when does the ferry leave?",
        "You said: and on sundays?",
    ]
    # Threads are one Chat: the second question was asked with the first exchange as context.
    streamed = [r for r in bridge.llm.requests if r.get("stream")]
    assert [m["content"] for m in streamed[-1]["messages"] if m["role"] != "system"] == [
        "when does the ferry leave?",
        "You said: when does the ferry leave?",
        "and on sundays?",
    ]
    # One title, one rename: a chat that has its title is not renamed again.
    renames = [r for r in emu.requests if r.route == "PATCH /channels/{channel_id}"]
    assert [r.json for r in renames] == [{"name": TITLE}]
    typing = {t.channel_id for t in emu.typing_events}
    assert typing == {thread.id}


async def test_a_mention_in_a_users_thread_is_answered_there_and_the_thread_keeps_its_name(
    make_bridge: BridgeFactory,
) -> None:
    async with make_bridge(auto_thread=True, titles=True) as bridge:
        emu = bridge.emu
        bridge.llm.responder = echo_or_title
        thread = await emu.start_thread(bridge.channel_id, bridge.alice, "alice's thread")
        await bridge.mention("a question", channel_id=thread)
        await bridge.reply_shown("You said: a question", thread)
        await bridge.settled()

    assert len(emu.threads) == 1 and emu.threads[0].name == "alice's thread"
    assert not [r for r in emu.requests if r.route == "PATCH /channels/{channel_id}"]
