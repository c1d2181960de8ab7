"""The rules of adapters/discord/events.py on plain facts (no gateway): what never reaches the core,
whether a message calls on the bot (`Origin.addressed`), and the Origin's places and roles."""

from __future__ import annotations

from dataclasses import replace

import pytest

from adapters.discord.events import BotView, MessageFacts, Place, Trigger, decide
from bridge.domain import ChatKey
from bridge.policy.origin import Origin

BOT, ALICE, BOB, OTHER_BOT = 100, 200, 300, 400
GUILD, CHANNEL, MESSAGE = 10, 20, 30
VIEW = BotView(user_id=BOT)


def facts(**changes: object) -> MessageFacts:
    """Alice writing "hello" in a guild text channel, mentioning nobody."""
    base = MessageFacts(
        message_id=MESSAGE,
        guild_id=GUILD,
        channel_id=CHANNEL,
        place=Place.TEXT_CHANNEL,
        author_id=ALICE,
        author_name="Alice",
        content="hello",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def mentioning(content: str = f"<@{BOT}> hello", **changes: object) -> MessageFacts:
    changes.setdefault("mentioned_user_ids", frozenset({BOT}))
    return facts(content=content, **changes)


def answered(trigger: Trigger | None) -> Trigger:
    """Passed to the core (which answers it unless the policy says otherwise)."""
    assert trigger is not None
    return trigger


def addressed(message: MessageFacts, view: BotView = VIEW) -> bool:
    return answered(decide(message, view)).origin.addressed


def test_a_mention_in_a_guild_channel_is_answered_with_the_mention_stripped() -> None:
    trigger = answered(decide(mentioning(), VIEW))
    assert trigger.origin == Origin("discord", str(ALICE), str(GUILD), str(CHANNEL))
    inbound = trigger.inbound
    assert inbound.text == "hello"
    assert inbound.chat_key == ChatKey("discord", str(GUILD), str(CHANNEL))
    assert inbound.event_id == f"message:{MESSAGE}"
    assert (inbound.author_id, inbound.author_name) == (str(ALICE), "Alice")
    assert inbound.platform_message_id == str(MESSAGE)
    assert not trigger.open_thread


@pytest.mark.parametrize(
    "content",
    [f"<@{BOT}> hello", f"<@!{BOT}> hello", f"hello <@{BOT}>", f"  <@{BOT}>   hello  "],
)
def test_every_spelling_of_the_bot_mention_is_removed(content: str) -> None:
    assert answered(decide(mentioning(content), VIEW)).inbound.text == "hello"


def test_other_mentions_become_readable_names() -> None:
    message = mentioning(
        f"<@{BOT}> ask <@{BOB}> and <@999>",
        mentioned_user_ids=frozenset({BOT, BOB}),
        user_names=((BOB, "Bob"),),
    )
    assert answered(decide(message, VIEW)).inbound.text == "ask @Bob and <@999>"


def test_a_mention_of_the_bots_role_counts_as_a_mention() -> None:
    message = facts(content="<@&555> hello", bot_role_id=555)
    assert answered(decide(message, VIEW)).inbound.text == "hello"
    assert addressed(message)


def test_an_unaddressed_guild_message_goes_to_the_core_as_not_addressed() -> None:
    # The core answers it only where the channel's trigger is "always".
    trigger = answered(decide(facts(), VIEW))
    assert not trigger.origin.addressed and trigger.inbound.text == "hello"


def test_a_reply_to_the_bots_message_is_addressed_without_a_mention() -> None:
    assert addressed(facts(replied_to_author_id=BOT))
    assert not addressed(facts(replied_to_author_id=BOB))


def test_every_dm_is_addressed_and_in_its_own_chat() -> None:
    trigger = answered(decide(facts(guild_id=None, place=Place.DM), VIEW))
    assert trigger.inbound.chat_key == ChatKey("discord", "", str(CHANNEL))
    assert trigger.origin == Origin("discord", str(ALICE), "", str(CHANNEL), is_dm=True)
    assert not trigger.open_thread


def test_in_a_thread_the_bot_opened_every_message_is_addressed() -> None:
    in_own_thread = facts(place=Place.THREAD, thread_owner_id=BOT, parent_id=21)
    assert answered(decide(in_own_thread, VIEW)).inbound.chat_key.channel == str(CHANNEL)
    assert addressed(in_own_thread)
    # Someone else's thread is like any channel: a mention addresses the bot.
    in_users_thread = facts(place=Place.THREAD, thread_owner_id=BOB, parent_id=21)
    assert not addressed(in_users_thread)
    assert addressed(replace(in_users_thread, mentioned_user_ids=frozenset({BOT})))


def test_the_origin_has_the_thread_its_channel_the_category_and_the_roles() -> None:
    in_thread = facts(place=Place.THREAD, parent_id=21, category_id=5, role_ids=frozenset({7, 8}))
    assert answered(decide(in_thread, VIEW)).origin == Origin(
        "discord",
        str(ALICE),
        str(GUILD),
        channel="21",
        thread=str(CHANNEL),
        category="5",
        roles=frozenset({"7", "8"}),
        addressed=False,
    )
    in_channel = facts(category_id=5)
    origin = answered(decide(in_channel, VIEW)).origin
    assert (origin.channel, origin.thread, origin.category) == (str(CHANNEL), "", "5")


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(mentioning(author_id=BOT), id="own message"),
        pytest.param(mentioning(author_id=OTHER_BOT, author_is_bot=True), id="other bot"),
        pytest.param(mentioning(webhook_id=77, author_is_bot=True), id="webhook"),
        pytest.param(mentioning(system=True), id="system message"),
        pytest.param(mentioning(f"<@{BOT}>"), id="nothing but the mention"),
        pytest.param(facts(guild_id=None, place=Place.DM, content="  "), id="empty DM"),
        pytest.param(facts(content=""), id="no text (an image alone)"),
    ],
)
def test_ignored_messages(message: MessageFacts) -> None:
    assert decide(message, VIEW) is None


def test_other_bots_may_be_answered_when_configured() -> None:
    view = replace(VIEW, ignore_other_bots=False)
    assert decide(mentioning(author_id=OTHER_BOT, author_is_bot=True), view) is not None
    assert decide(mentioning(webhook_id=77, author_is_bot=True), view) is not None
    # Never itself, whatever the setting.
    assert decide(mentioning(author_id=BOT), view) is None


def test_auto_thread_opens_a_thread_keyed_by_the_message_in_text_channels_only() -> None:
    view = replace(VIEW, auto_thread=True)
    trigger = answered(decide(mentioning(category_id=5), view))
    assert trigger.open_thread
    # The thread will have the message's id: the reply's Chat is that thread; for the policy
    # the message is in its channel.
    assert trigger.inbound.chat_key == ChatKey("discord", str(GUILD), str(MESSAGE))
    assert (trigger.origin.channel, trigger.origin.thread) == (str(CHANNEL), "")
    assert trigger.origin.category == "5"
    for place, owner in ((Place.THREAD, BOT), (Place.THREAD, BOB), (Place.OTHER, None)):
        other = answered(decide(mentioning(place=place, thread_owner_id=owner), view))
        assert not other.open_thread and other.inbound.chat_key.channel == str(CHANNEL)
    dm = answered(decide(facts(guild_id=None, place=Place.DM), view))
    assert not dm.open_thread


def test_mention_only_mode_passes_mentions_and_dms_only() -> None:
    view = replace(VIEW, mention_only=True)
    assert addressed(mentioning(), view)
    assert addressed(facts(guild_id=None, place=Place.DM), view)
    # Without the intent these arrive without content; they never reach the core.
    assert decide(facts(place=Place.THREAD, thread_owner_id=BOT, content=""), view) is None
    assert decide(facts(replied_to_author_id=BOT, content=""), view) is None
    assert decide(facts(content=""), view) is None
