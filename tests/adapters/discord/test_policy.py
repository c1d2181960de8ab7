"""What the policy learns from Discord (roles, category, thread and channel, whether the bot is
called on) and what its decisions look like there: answers without a mention where the trigger is
"always", silence or a notice that pings no one where it refuses."""

from __future__ import annotations

from bridge.config import NoticeSettings
from tests.adapters.discord.conftest import BridgeFactory, Scene, pings_no_one, wait_until


async def test_roles_and_the_category_reach_the_origin(
    make_bridge: BridgeFactory, scene: Scene
) -> None:
    emu = scene.emu
    category = emu.add_category(scene.guild_id, "Support")
    channel = emu.add_text_channel(scene.guild_id, "help", category=category)
    role = emu.add_role(scene.guild_id, "Customers")
    emu.give_role(scene.guild_id, scene.alice, role)
    async with make_bridge() as bridge:
        message = await bridge.mention("hello", channel_id=channel)
        await bridge.reply_shown("You said: hello", channel)
    origin = bridge.core.intake.origin_of(message)
    assert (origin.workspace, origin.channel, origin.thread, origin.category) == (
        str(scene.guild_id),
        str(channel),
        "",
        str(category),
    )
    # As Discord lists a member's roles: the ones given, not @everyone (the guild's id).
    assert origin.roles == {str(role)}
    assert origin.user == str(scene.alice) and origin.addressed and not origin.is_dm


async def test_a_message_in_a_users_thread_has_the_thread_its_channel_and_category(
    make_bridge: BridgeFactory, scene: Scene
) -> None:
    emu = scene.emu
    category = emu.add_category(scene.guild_id, "Support")
    channel = emu.add_text_channel(scene.guild_id, "help", category=category)
    async with make_bridge() as bridge:
        thread = await emu.start_thread(channel, scene.bob, "printer trouble")
        message = await bridge.mention("it jams", channel_id=thread)
        await bridge.reply_shown("You said: it jams", thread)
    origin = bridge.core.intake.origin_of(message)
    assert (origin.channel, origin.thread, origin.category) == (
        str(channel),
        str(thread),
        str(category),
    )
    assert origin.roles == frozenset()


async def test_an_unaddressed_message_reaches_the_core_and_is_not_answered_by_default(
    make_bridge: BridgeFactory, scene: Scene
) -> None:
    emu = scene.emu
    async with make_bridge() as bridge:
        chatter = await emu.user_message(scene.channel_id, scene.bob, "just chatting")
        await wait_until(lambda: len(bridge.core.intake.received) == 1)
        await bridge.mention("a question")
        await bridge.reply_shown("You said: a question")
        await bridge.settled()
    assert not bridge.core.intake.origin_of(chatter).addressed
    assert [m.content for m in bridge.bot_messages()] == ["You said: a question"]
    assert [r["messages"][-1]["content"] for r in bridge.llm.requests] == ["a question"]


async def test_trigger_always_for_a_category_answers_its_channels_without_a_mention(
    make_bridge: BridgeFactory, scene: Scene
) -> None:
    emu = scene.emu
    category = emu.add_category(scene.guild_id, "Ask the bot")
    channel = emu.add_text_channel(scene.guild_id, "questions", category=category)
    overrides = [{"channel": str(category), "trigger": "always"}]
    async with make_bridge(overrides=overrides) as bridge:
        elsewhere = await emu.user_message(scene.channel_id, scene.bob, "not for the bot")
        await emu.user_message(channel, scene.bob, "what is a snowflake?")
        await bridge.reply_shown("You said: what is a snowflake?", channel)
        await wait_until(lambda: len(bridge.core.intake.received) == 2)
        await bridge.settled()
    assert not bridge.core.intake.origin_of(elsewhere).addressed
    assert bridge.bot_messages() == []  # general is not in the category


async def test_allowed_roles_lets_members_with_one_of_them_through(
    make_bridge: BridgeFactory, scene: Scene
) -> None:
    emu = scene.emu
    role = emu.add_role(scene.guild_id, "Staff")
    emu.give_role(scene.guild_id, scene.alice, role)
    access = {"allowed_roles": [str(role)], "notify_denied": True}
    async with make_bridge(access=access) as bridge:
        refused = await bridge.mention("may I?", author=scene.bob)
        notice = await wait_until(lambda: next(iter(bridge.bot_messages()), None))
        await bridge.mention("and I?")
        await bridge.reply_shown("You said: and I?")
        await bridge.settled()
    assert notice.content == NoticeSettings().denied
    assert notice.message_reference is not None
    assert notice.message_reference["message_id"] == str(refused)
    assert notice.mentions == ()  # not even bob, whose message it replies to
    assert [r["messages"][-1]["content"] for r in bridge.llm.requests] == ["and I?"]


async def test_a_message_over_a_limit_gets_a_notice_that_pings_no_one(
    make_bridge: BridgeFactory, scene: Scene
) -> None:
    limits = {"user_messages_per_minute": 1}
    async with make_bridge(limits=limits, auto_thread=True) as bridge:
        first = await bridge.mention("first")
        await wait_until(lambda: bridge.emu.threads)
        second = await bridge.mention("second")
        notice = await wait_until(
            lambda: next((m for m in bridge.bot_messages() if "Not answered" in m.content), None)
        )
        await bridge.settled()
    # In the channel, as a reply to the message it refuses; no thread opened for it.
    assert notice.channel_id == scene.channel_id
    assert notice.message_reference is not None
    assert notice.message_reference["message_id"] == str(second)
    assert notice.mentions == () and not notice.mention_everyone
    post = next(r for r in bridge.writes() if r.json and r.json.get("content") == notice.content)
    assert pings_no_one(post.json) and post.json.get("nonce")
    assert [t.id for t in bridge.emu.threads] == [first]
