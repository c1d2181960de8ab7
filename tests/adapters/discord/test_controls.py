"""Stop and feedback on Discord: a Stop button while a reply streams, 👍/👎 once it is answered,
clicks (INTERACTION_CREATE type 3) acknowledged with type 6 and passed to the core's
ReplyControls with the clicker's Origin, a refused Stop explained to the clicker only, and 🛑
reactions. The emulator dispatches clicks and reactions as Discord does; discord.py is real."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from adapters.discord.components import STOP_ID, VOTE_IDS
from adapters.discord.controls import FINISHED, REFUSED
from adapters.discord.gateway import bridge_intents
from bridge.controls import StopOutcome
from bridge.domain import MessageStatus, Role
from sandbox.discord_emulator import ShownMessage
from sandbox.discord_emulator.records import InteractionRecord
from sandbox.llm_server import Fault, ScriptedReply
from tests.adapters.discord.conftest import Bridge, BridgeFactory, pings_no_one, wait_until

EPHEMERAL = 1 << 6
DEFERRED_UPDATE_MESSAGE = 6
VOTES = [VOTE_IDS["up"], VOTE_IDS["down"]]
SLOW = ScriptedReply(text=" ".join(f"word{i}" for i in range(400)), tokens_per_second=40)


async def streaming_reply(bridge: Bridge, channel_id: int | None = None) -> ShownMessage:
    """The bot's reply once it shows text and its Stop button."""
    shown: ShownMessage = await wait_until(
        lambda: next(
            (
                m
                for m in bridge.bot_messages(channel_id)
                if m.custom_ids() == [STOP_ID] and "word" in m.content
            ),
            None,
        )
    )
    return shown


async def finished(bridge: Bridge, message_id: int) -> ShownMessage:
    """The message once it no longer carries the Stop button."""
    shown: ShownMessage = await wait_until(
        lambda: (m := bridge.emu.message(message_id)) and STOP_ID not in m.custom_ids() and m
    )
    await bridge.settled()
    return shown


async def acknowledged(bridge: Bridge, interaction_id: int) -> InteractionRecord:
    record: InteractionRecord = await wait_until(
        lambda: (r := bridge.emu.interaction(interaction_id)).response_type is not None and r
    )
    return record


@contextlib.asynccontextmanager
async def slow_reply(make_bridge: BridgeFactory, **options: object) -> AsyncIterator[Bridge]:
    async with make_bridge(**options) as bridge:
        bridge.llm.script(SLOW)
        yield bridge


async def test_the_stop_button_shows_while_streaming_and_votes_replace_it_at_the_end(
    make_bridge: BridgeFactory,
) -> None:
    async with make_bridge() as bridge:
        bridge.llm.script(ScriptedReply(text="a short answer", tokens_per_second=20))
        await bridge.mention("hello")
        placeholder = await wait_until(lambda: next(iter(bridge.bot_messages()), None))
        done = await finished(bridge, placeholder.id)

    # From the placeholder on, while it streamed.
    assert placeholder.custom_ids() == [STOP_ID]
    [row] = placeholder.components
    assert row["type"] == 1 and row["components"][0]["style"] == 4  # danger
    assert done.content == "a short answer"
    assert done.custom_ids() == VOTES
    # Every create and edit still pings no one.
    assert all(pings_no_one(r.json) for r in bridge.writes())


async def test_a_long_reply_moves_its_stop_button_to_the_message_still_being_written(
    make_bridge: BridgeFactory,
) -> None:
    text = " ".join(f"word{i}" for i in range(300))  # about 2,300 characters: two messages
    async with make_bridge() as bridge:
        bridge.llm.script(ScriptedReply(text=text, tokens_per_second=50))
        await bridge.mention("a long one")
        await wait_until(
            lambda: (ms := bridge.bot_messages()) and len(ms) == 2 and STOP_ID in ms[1].custom_ids()
        )
        first_meanwhile = bridge.bot_messages()[0]
        last = await finished(bridge, bridge.bot_messages()[-1].id)
        shown = bridge.bot_messages()

    assert first_meanwhile.components == ()
    assert [m.custom_ids() for m in shown] == [[], VOTES]
    assert last.content.endswith("word299")


async def test_votes_go_under_the_last_message_when_the_end_comes_before_the_rest_is_shown(
    make_bridge: BridgeFactory,
) -> None:
    """The model finishes while the channel's edit bucket holds the text back: the messages
    after the end are written in one go, and only the last keeps the votes."""
    text = " ".join(f"word{i}" for i in range(700))  # about 5,500 characters: three messages
    async with make_bridge() as bridge:
        bridge.llm.script(ScriptedReply(text=text, tokens_per_second=1000))
        await bridge.mention("a long one, fast")
        await wait_until(lambda: len(bridge.bot_messages()) == 3)
        await finished(bridge, bridge.bot_messages()[-1].id)
        await wait_until(lambda: [m.custom_ids() for m in bridge.bot_messages()][:2] == [[], []])
        shown = bridge.bot_messages()

    assert [m.custom_ids() for m in shown] == [[], [], VOTES]
    assert shown[-1].content.endswith("word699")
    assert all(pings_no_one(r.json) for r in bridge.writes())
    # The votes were written once, to the last message: no edit took them off another one.
    voted = [r for r in bridge.writes() if VOTES[0] in str(r.json)]
    assert len(voted) == 1


async def test_no_buttons_when_both_are_turned_off(make_bridge: BridgeFactory) -> None:
    async with make_bridge() as bridge:
        bridge.core.controls.stop_button = False
        bridge.core.controls.feedback_buttons = False
        await bridge.mention("plain")
        await bridge.reply_shown("You said: plain")
        await bridge.settled()

    assert all(not m.components for m in bridge.bot_messages())
    # discord.py sends `components: []` with every create; no write asks for buttons.
    assert all(not (r.json or {}).get("components") for r in bridge.writes())


async def test_a_failed_reply_loses_its_stop_button_and_gets_no_votes(
    make_bridge: BridgeFactory,
) -> None:
    async with make_bridge() as bridge:
        bridge.llm.script(ScriptedReply(fault=Fault.status(400, message="model not found")))
        await bridge.mention("this will fail")
        placeholder = await wait_until(lambda: next(iter(bridge.bot_messages()), None))
        done = await finished(bridge, placeholder.id)

    assert done.components == ()


async def test_the_asker_stops_the_reply_with_the_button(make_bridge: BridgeFactory) -> None:
    async with slow_reply(make_bridge) as bridge:
        asked = await bridge.mention("tell me everything")
        reply = await streaming_reply(bridge)
        click = await bridge.emu.click(bridge.channel_id, reply.id, bridge.alice, STOP_ID)
        record = await acknowledged(bridge, click)
        done = await finished(bridge, reply.id)
        stored = await bridge.store.messages(await bridge.chat_id())

    assert record.response_type == DEFERRED_UPDATE_MESSAGE
    assert record.responded_at is not None and record.responded_at - record.created_at < 3
    [(origin, chat, message_id, outcome)] = bridge.core.controls.stops
    assert outcome is StopOutcome.STOPPED and message_id == str(reply.id)
    assert (origin.user, origin.workspace, origin.channel, origin.is_dm) == (
        str(bridge.alice), str(bridge.guild_id), str(bridge.channel_id), False,
    )  # fmt: skip
    assert chat.channel == str(bridge.channel_id)
    # Its text so far stands, under the stop note; the stopped reply may be voted on.
    assert "word0" in done.content and "Stopped" in done.content
    assert "word399" not in done.content
    assert done.custom_ids() == VOTES
    answer = next(m for m in stored if m.role is Role.ASSISTANT)
    assert answer.status is MessageStatus.STOPPED
    assert record.followup_ids == ()  # nothing to say to the asker
    assert str(asked) == next(m for m in stored if m.role is Role.USER).platform_message_ids[0]


async def test_a_reply_in_a_dm_is_stopped_by_its_button(make_bridge: BridgeFactory) -> None:
    async with slow_reply(make_bridge) as bridge:
        emu = bridge.emu
        dm = emu.dm_channel(bridge.alice)
        await emu.user_message(dm, bridge.alice, "a long private story")
        reply = await streaming_reply(bridge, channel_id=dm)
        await emu.click(dm, reply.id, bridge.alice, STOP_ID)
        done = await finished(bridge, reply.id)

    [(origin, chat, _, outcome)] = bridge.core.controls.stops
    assert outcome is StopOutcome.STOPPED and origin.is_dm and origin.workspace == ""
    assert chat.channel == str(dm)
    assert "Stopped" in done.content and done.custom_ids() == VOTES


async def test_someone_else_is_told_they_cannot_stop_it_and_an_admin_can(
    make_bridge: BridgeFactory,
) -> None:
    async with slow_reply(make_bridge) as bridge:
        emu = bridge.emu
        admins = emu.make_admin(bridge.guild_id, bridge.bob)
        carol = emu.add_user("carol")
        bridge.core.controls.set_admin_check(lambda origin: str(admins) in origin.roles)
        await bridge.mention("a long story")
        reply = await streaming_reply(bridge)

        refused = await acknowledged(
            bridge, await emu.click(bridge.channel_id, reply.id, carol, STOP_ID)
        )
        answer = await wait_until(lambda: emu.interaction(refused.id).followup_ids or None)
        still = emu.message(reply.id)
        assert still is not None and STOP_ID in still.custom_ids()

        await emu.click(bridge.channel_id, reply.id, bridge.bob, STOP_ID)
        done = await finished(bridge, reply.id)

    shown = emu.message(answer[0])
    assert shown is not None and shown.flags & EPHEMERAL and shown.content == REFUSED
    assert shown not in emu.messages(bridge.channel_id)  # only carol sees it
    outcomes = [(origin.user, outcome) for origin, _, _, outcome in bridge.core.controls.stops]
    assert outcomes == [(str(carol), StopOutcome.REFUSED), (str(bridge.bob), StopOutcome.STOPPED)]
    bob = bridge.core.controls.stops[1][0]
    assert str(admins) in bob.roles
    assert "Stopped" in done.content


async def test_a_stop_after_the_end_is_answered_as_such(make_bridge: BridgeFactory) -> None:
    """A Stop button a dead process left on a message: the click says the reply is over."""
    async with make_bridge() as bridge:
        emu = bridge.emu
        await bridge.mention("quick")
        reply = await bridge.reply_shown("You said: quick")
        await bridge.settled()
        message = emu.world.message(bridge.channel_id, reply.id)
        assert message is not None
        message.components = [
            {
                "type": 1,
                "components": [{"type": 2, "style": 4, "label": "Stop", "custom_id": STOP_ID}],
            }
        ]
        click = await emu.click(bridge.channel_id, reply.id, bridge.alice, STOP_ID)
        followups = await wait_until(lambda: emu.interaction(click).followup_ids or None)

    shown = emu.message(followups[0])
    assert shown is not None and shown.content == FINISHED and shown.flags & EPHEMERAL


async def test_a_stop_sign_reaction_on_the_reply_or_the_question_stops_it(
    make_bridge: BridgeFactory,
) -> None:
    async with slow_reply(make_bridge) as bridge:
        emu = bridge.emu
        await bridge.mention("first long one")
        reply = await streaming_reply(bridge)
        await emu.react(bridge.channel_id, reply.id, bridge.bob)  # not the asker: refused
        await emu.react(bridge.channel_id, reply.id, bridge.alice, "👍")  # not a stop
        await emu.react(bridge.channel_id, reply.id, bridge.alice)
        first = await finished(bridge, reply.id)

        bridge.llm.script(SLOW)
        question = await bridge.mention("second long one")
        second = await streaming_reply(bridge)
        await emu.react(bridge.channel_id, question, bridge.alice)
        stopped = await finished(bridge, second.id)

    outcomes = [(o.user, m, outcome) for o, _, m, outcome in bridge.core.controls.stops]
    assert outcomes == [
        (str(bridge.bob), str(reply.id), StopOutcome.REFUSED),
        (str(bridge.alice), str(reply.id), StopOutcome.STOPPED),
        (str(bridge.alice), str(question), StopOutcome.STOPPED),
    ]
    assert "Stopped" in first.content and "Stopped" in stopped.content


async def test_a_stop_sign_on_the_question_stops_the_reply_in_its_thread(
    make_bridge: BridgeFactory,
) -> None:
    """auto_thread: the question is in the channel, its reply in the thread named after it."""
    async with slow_reply(make_bridge, auto_thread=True) as bridge:
        emu = bridge.emu
        question = await bridge.mention("in a thread please")
        reply = await streaming_reply(bridge, channel_id=question)
        await emu.react(bridge.channel_id, question, bridge.alice)
        done = await finished(bridge, reply.id)

    # The core finds the reply by its message among the workspace's replies, whichever of the
    # question's possible chats the adapter asked about first.
    [(_, chat, _, outcome)] = bridge.core.controls.stops[-1:]
    assert outcome is StopOutcome.STOPPED and chat.workspace == str(bridge.guild_id)
    assert "Stopped" in done.content


async def test_the_bridge_asks_for_the_reaction_intents() -> None:
    intents = bridge_intents(message_content=True)
    assert intents.guild_reactions and intents.dm_reactions
    assert intents.value & (1 << 10) and intents.value & (1 << 13)


async def test_votes_are_kept_per_user_the_last_one_counting_even_after_a_restart(
    make_bridge: BridgeFactory,
) -> None:
    async with make_bridge() as first:
        emu = first.emu
        await first.mention("rate me")
        reply = await first.reply_shown("You said: rate me")
        await first.settled()
        up = await emu.click(first.channel_id, reply.id, first.alice, VOTE_IDS["up"])
        thanks = await wait_until(lambda: emu.interaction(up).followup_ids or None)
        await wait_until(lambda: len(first.core.controls.votes) == 1)

    # Another process: the buttons on the old reply still work (no in-memory view behind them).
    async with make_bridge() as second:
        await emu.click(second.channel_id, reply.id, second.alice, VOTE_IDS["down"])
        await emu.click(second.channel_id, reply.id, second.bob, VOTE_IDS["up"])
        await wait_until(lambda: len(second.core.controls.votes) == 2)
        answer = await second.store.find_message(first.core.controls.votes[0][1], str(reply.id))
        assert answer is not None
        votes = await second.store.votes(answer.id)

    assert emu.interaction(up).response_type == DEFERRED_UPDATE_MESSAGE
    shown = emu.message(thanks[0])
    assert shown is not None and shown.flags & EPHEMERAL and "👍" in shown.content
    assert votes == {str(first.alice): "down", str(first.bob): "up"}
    origin, chat, message_id, value, changed = second.core.controls.votes[0]
    assert (origin.user, message_id, value, changed) == (
        str(first.alice),
        str(reply.id),
        "down",
        True,
    )
    assert chat.channel == str(first.channel_id)
