"""Replies on Discord end to end: the emulator drives the real discord.py, the bridge answers
through the real Responder, SQLite store, openai SDK and EditScheduler."""

from __future__ import annotations

import re

from sandbox.llm_server import ScriptedReply
from tests.adapters.discord.conftest import (
    EDIT_ROUTE,
    INTERVAL,
    BridgeFactory,
    pings_no_one,
    wait_until,
    within_fixed_windows,
)

TEXT = " ".join(f"word{i}" for i in range(60)) + "."
# Arrival times come from one machine's clock; allow for the jitter of a busy event loop.
JITTER = 0.05


def user_turns(request: dict[str, object]) -> list[str]:
    messages = request["messages"]
    assert isinstance(messages, list)
    return [m["content"] for m in messages if m["role"] != "system"]


async def test_a_mention_gets_typing_a_reply_placeholder_paced_edits_and_the_exact_text(
    make_bridge: BridgeFactory,
) -> None:
    async with make_bridge() as bridge:
        emu = bridge.emu
        # About 0.6 s: a few edits, fewer than the channel's bucket holds.
        bridge.llm.script(ScriptedReply(text=TEXT, tokens_per_second=100))
        asked = await bridge.mention("  tell me   something ")
        shown = await bridge.reply_shown(TEXT)
        await bridge.settled()

    assert shown.message_reference is not None
    assert shown.message_reference["message_id"] == str(asked)
    assert [m.id for m in bridge.bot_messages()] == [shown.id]
    # The mention is not part of what the model reads.
    assert user_turns(bridge.llm.requests[-1]) == ["tell me something"]
    typing = [t.time for t in emu.typing_events if t.channel_id == bridge.channel_id]
    assert typing and typing[0] <= shown.created_at
    # Streamed: several edits, never closer together than the interval.
    assert shown.edit_count >= 2
    gaps = [b - a for a, b in zip(shown.edit_times, shown.edit_times[1:], strict=False)]
    assert all(gap >= INTERVAL - JITTER for gap in gaps), gaps
    edits = [r.time for r in bridge.writes() if r.route == EDIT_ROUTE]
    assert within_fixed_windows(edits, limit=5, per=5.0)
    assert emu.stats.violations == 0
    assert all(pings_no_one(r.json) for r in bridge.writes())


async def test_a_long_reply_with_code_continues_in_messages_of_at_most_2000_characters(
    make_bridge: BridgeFactory,
) -> None:
    paragraphs = [f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 12 for i in range(8)]
    code = "```python\n" + "\n".join(f"value_{i} = compute({i})  # step {i}" for i in range(68))
    text = "\n\n".join(paragraphs[:4]) + "\n\n" + code + "\n```\n\n" + "\n\n".join(paragraphs[4:])
    assert 4900 <= len(text) <= 5100
    async with make_bridge() as bridge:
        bridge.llm.script(ScriptedReply(text=text, tokens_per_second=1500))
        await bridge.mention("write a long answer")
        await wait_until(lambda: len(bridge.bot_messages()) >= 3)
        await bridge.settled()

    shown = [m.content for m in bridge.bot_messages()]
    assert len(shown) >= 3 and all(len(content) <= 2000 for content in shown)
    for content in shown:
        fences = re.findall(r"^```", content, flags=re.MULTILINE)
        assert len(fences) % 2 == 0, f"a message left a code block open: {content[-80:]!r}"
    # The code block itself was split: closed at the end of one message, reopened in its language.
    assert any(
        a.rstrip().endswith("```") and b.startswith("```python")
        for a, b in zip(shown, shown[1:], strict=False)
    )
    # Together they are the text, apart from the fence lines added to close and reopen the block.
    assert squash(unfenced("\n".join(shown))) == squash(unfenced(text))
    assert "▌" not in "".join(shown)
    # Continuations are plain messages in the same channel; only the first replies.
    replies = [m for m in bridge.bot_messages() if m.message_reference is not None]
    assert len(replies) == 1


def unfenced(text: str) -> str:
    return re.sub(r"^```\w*$", "", text, flags=re.MULTILINE)


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


async def test_a_dm_and_a_reply_to_the_bots_message_are_answered(
    make_bridge: BridgeFactory,
) -> None:
    async with make_bridge() as bridge:
        emu = bridge.emu
        dm = emu.dm_channel(bridge.alice)
        await emu.user_message(dm, bridge.alice, "hello in private")
        await bridge.reply_shown("You said: hello in private", dm)

        await bridge.mention("first")
        first = await bridge.reply_shown("You said: first")
        await emu.user_message(bridge.channel_id, bridge.bob, "and a follow-up", reply_to=first.id)
        await bridge.reply_shown("You said: and a follow-up")
        await bridge.settled()

    # The reply to the bot continues the channel's conversation.
    assert user_turns(bridge.llm.requests[-1]) == [
        "first",
        "You said: first",
        "and a follow-up",
    ]


async def test_messages_not_for_the_bot_cause_no_llm_call(make_bridge: BridgeFactory) -> None:
    async with make_bridge() as bridge:
        emu = bridge.emu
        robot = emu.add_user("robot", bot=True)
        thread = await emu.start_thread(bridge.channel_id, bridge.bob, "side talk")
        chatting = await emu.user_message(bridge.channel_id, bridge.alice, "just chatting")
        # Edits are not new messages, even when the edit adds a mention.
        await emu.edit_user_message(bridge.channel_id, chatting, f"<@{bridge.bot_id}> edited in")
        await emu.user_message(thread, bridge.alice, "in a thread the bot did not open")
        await emu.user_message(bridge.channel_id, robot, "hi bot", mention_bot=True)
        await emu.webhook_message(bridge.channel_id, f"<@{bridge.bot_id}> from a webhook")
        # The bot's own message mentioning itself must not start a conversation with itself.
        bridge.llm.script(ScriptedReply(text=f"Hello <@{bridge.bot_id}>, and <@{bridge.alice}>."))
        await bridge.mention("the only question")
        await bridge.reply_shown(f"Hello <@{bridge.bot_id}>, and <@{bridge.alice}>.")
        # Everything above was dispatched before the last reply; one more round trip to be sure
        # the bot's own MESSAGE_CREATE/UPDATE have been seen.
        await bridge.mention("sentinel")
        await bridge.reply_shown("You said: sentinel")
        await bridge.settled()

    asked = [user_turns(r)[-1] for r in bridge.llm.requests]
    assert asked == ["the only question", "sentinel"]


async def test_llm_output_never_pings_anyone(make_bridge: BridgeFactory) -> None:
    async with make_bridge() as bridge:
        emu = bridge.emu
        loud = f"Attention @everyone and @here, <@&{bridge.guild_id}> and <@{bridge.bob}>! " * 3
        bridge.llm.script(ScriptedReply(text=loud.strip(), tokens_per_second=150))
        await bridge.mention("ping everybody")
        shown = await bridge.reply_shown(loud.strip())
        await bridge.settled()

    writes = bridge.writes()
    assert len(writes) >= 3  # the placeholder and at least two edits
    for request in writes:
        assert pings_no_one(request.json), request.json
    assert shown.allowed_mentions == {"parse": []}
    assert shown.mentions == () and not shown.mention_everyone
    assert emu.stats.violations == 0


async def test_a_replayed_message_create_is_answered_once(make_bridge: BridgeFactory) -> None:
    async with make_bridge() as bridge:
        emu = bridge.emu
        asked = await bridge.mention("only once please")
        await emu.replay(asked)  # while the first delivery is being answered
        await bridge.reply_shown("You said: only once please")
        await emu.replay(asked)  # and after
        await bridge.mention("sentinel")
        await bridge.reply_shown("You said: sentinel")
        await bridge.settled()

    assert [user_turns(r)[-1] for r in bridge.llm.requests] == ["only once please", "sentinel"]
    assert len(bridge.bot_messages()) == 2
