"""The Discord emulator against the real discord.py client (and raw HTTP/WebSocket where a client
would hide what is on the wire): login, messages, edits, typing, threads, rate limits, intents,
resumes and slash commands."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands

from sandbox.discord_emulator import DiscordEmulator
from tests.sandbox.discord_emulator_harness import (
    RecordingClient,
    bot_intents,
    discord_pointed_at,
    running_bot,
    wait_until,
)

TOKEN = "test-token"
EDIT_ROUTE = "PATCH /channels/{channel_id}/messages/{message_id}"
CREATE_ROUTE = "POST /channels/{channel_id}/messages"


@dataclass
class Scene:
    emu: DiscordEmulator
    guild_id: int
    channel_id: int
    alice: int


@pytest.fixture
async def scene() -> AsyncIterator[Scene]:
    async with DiscordEmulator(token=TOKEN, bot_name="bridge-bot") as emu:
        guild_id = emu.add_guild("Test Guild")
        channel_id = emu.add_text_channel(guild_id, "general")
        yield Scene(emu, guild_id, channel_id, emu.add_user("alice"))


def bot_headers() -> dict[str, str]:
    return {"Authorization": f"Bot {TOKEN}"}


async def on_message_of(bot: RecordingClient, message_id: int) -> discord.Message:
    (message,) = await bot.next_event("message", lambda m: m.id == message_id)
    return message


async def test_login_and_ready_show_guild_channel_and_members(scene: Scene) -> None:
    async with running_bot(scene.emu) as bot:
        assert bot.user is not None and bot.user.id == scene.emu.bot_user_id
        assert bot.application_id == scene.emu.application_id
        guild = bot.get_guild(scene.guild_id)
        assert guild is not None and guild.name == "Test Guild"
        channel = guild.get_channel(scene.channel_id)
        assert isinstance(channel, discord.TextChannel) and channel.name == "general"
        # Without the GUILD_MEMBERS intent Discord lists only the bot among the members.
        assert guild.me is not None and guild.member_count == 2
        assert guild.default_role.id == scene.guild_id
    routes = [r.route for r in scene.emu.requests]
    assert routes[:2] == ["GET /users/@me", "GET /oauth2/applications/@me"]
    assert scene.emu.stats.identifies == 1


async def test_user_messages_reach_on_message_with_discord_shapes(scene: Scene) -> None:
    emu = scene.emu
    async with running_bot(emu) as bot:
        plain_id = await emu.user_message(scene.channel_id, scene.alice, "hello there")
        plain = await on_message_of(bot, plain_id)
        assert plain.content == "hello there"
        assert isinstance(plain.author, discord.Member) and plain.author.id == scene.alice
        assert plain.guild is not None and plain.channel.id == scene.channel_id
        assert bot.user not in plain.mentions

        mention_id = await emu.user_message(scene.channel_id, scene.alice, "ping", mention_bot=True)
        mention = await on_message_of(bot, mention_id)
        assert mention.content == f"<@{emu.bot_user_id}> ping" and bot.user in mention.mentions

        reply_id = await emu.user_message(scene.channel_id, scene.alice, "and", reply_to=plain_id)
        reply = await on_message_of(bot, reply_id)
        assert reply.type is discord.MessageType.reply
        assert reply.reference is not None and reply.reference.message_id == plain_id
        assert isinstance(reply.reference.resolved, discord.Message)

        dm_id = await emu.user_message(emu.dm_channel(scene.alice), scene.alice, "psst")
        dm = await on_message_of(bot, dm_id)
        assert dm.guild is None and isinstance(dm.channel, discord.DMChannel)

        hook_id = await emu.webhook_message(scene.channel_id, "deploy finished")
        hook = await on_message_of(bot, hook_id)
        assert hook.webhook_id is not None and hook.author.bot


async def test_reply_and_edit_are_shown_with_the_allowed_mentions_received(scene: Scene) -> None:
    emu = scene.emu
    async with running_bot(emu) as bot:
        question_id = await emu.user_message(scene.channel_id, scene.alice, "what is 2+2?")
        question = await on_message_of(bot, question_id)
        none = discord.AllowedMentions.none()
        reply = await question.reply("thinking…", allowed_mentions=none)
        await reply.edit(content="4", allowed_mentions=none)

        (shown,) = [m for m in emu.messages(scene.channel_id) if m.id == reply.id]
        assert shown.content == "4" and shown.author_id == emu.bot_user_id
        assert shown.allowed_mentions == {"parse": []} and shown.mentions == ()
        assert shown.message_reference is not None
        assert shown.message_reference["message_id"] == str(question_id)
        assert shown.edit_count == 1 and shown.edit_times[0] >= shown.created_at

        # An edit without allowed_mentions parses mentions again with Discord's defaults.
        await reply.edit(content=f"4, <@{scene.alice}>")
        shown_again = emu.message(reply.id)
        assert shown_again is not None and shown_again.allowed_mentions is None
        assert shown_again.mentions == (scene.alice,) and shown_again.edit_count == 2
        # The bot also receives its own messages and edits over the gateway, as on Discord.
        await bot.next_event("message", lambda m: m.id == reply.id)
        await bot.next_event("raw_message_edit", lambda e: e.message_id == reply.id)


async def test_typing_is_recorded(scene: Scene) -> None:
    async with running_bot(scene.emu) as bot:
        channel = bot.get_channel(scene.channel_id)
        assert isinstance(channel, discord.TextChannel)
        async with channel.typing():
            await channel.send("done")
    (event,) = scene.emu.typing_events
    assert event.channel_id == scene.channel_id
    assert event.time <= scene.emu.messages(scene.channel_id)[-1].created_at


async def test_thread_created_from_a_message(scene: Scene) -> None:
    emu = scene.emu
    async with running_bot(emu) as bot:
        starter_id = await emu.user_message(scene.channel_id, scene.alice, "long question")
        starter = await on_message_of(bot, starter_id)
        thread = await starter.create_thread(name="long question", auto_archive_duration=60)
        assert thread.id == starter_id
        (created,) = await bot.next_event("thread_create")
        assert created.id == thread.id and created.parent_id == scene.channel_id
        await thread.send("answer in the thread")
        await thread.edit(name="answered")

    (info,) = emu.threads
    assert (info.id, info.type, info.parent_id) == (starter_id, 11, scene.channel_id)
    assert info.starter_message_id == starter_id and info.auto_archive_duration == 60
    assert info.name == "answered" and info.owner_id == emu.bot_user_id
    assert [m.content for m in emu.messages(thread.id)] == ["answer in the thread"]


async def test_subscribers_see_every_visible_change(scene: Scene) -> None:
    emu = scene.emu
    seen: list[tuple[str, int, str | None]] = []
    unsubscribe = emu.subscribe(
        lambda c: seen.append((c.kind, c.channel_id, c.message.content if c.message else None))
    )
    async with running_bot(emu) as bot:
        asked = await emu.user_message(scene.channel_id, scene.alice, "question")
        starter = await on_message_of(bot, asked)
        thread = await starter.create_thread(name="question")
        await thread.typing()
        reply = await thread.send("draft")
        await reply.edit(content="final")
        await thread.edit(name="answered")
        await reply.delete()
        unsubscribe()
        await thread.send("unseen")

    assert seen == [
        ("posted", scene.channel_id, "question"),
        ("thread", asked, None),
        ("typing", asked, None),
        ("posted", asked, "draft"),
        ("edited", asked, "final"),
        ("thread", asked, None),
        ("deleted", asked, "final"),
    ]


async def test_injected_429_is_waited_out_and_retried_by_discord_py(scene: Scene) -> None:
    emu = scene.emu
    emu.inject_429(CREATE_ROUTE, count=1, retry_after=0.3)
    async with running_bot(emu) as bot:
        channel = bot.get_channel(scene.channel_id)
        assert isinstance(channel, discord.TextChannel)
        sent = await channel.send("survives a 429")

    creates = [r for r in emu.requests if r.route == CREATE_ROUTE]
    assert [r.status for r in creates] == [429, 200]
    assert creates[1].time - creates[0].time >= 0.3
    assert [m.id for m in emu.messages(scene.channel_id)] == [sent.id]
    assert emu.stats.rate_limited == 1 and emu.stats.violations == 0


async def test_bucket_headers_pace_discord_py_without_violations(scene: Scene) -> None:
    emu = scene.emu
    emu.set_bucket(EDIT_ROUTE, limit=5, per=1.5)
    async with running_bot(emu) as bot:
        channel = bot.get_channel(scene.channel_id)
        assert isinstance(channel, discord.TextChannel)
        draft = await channel.send("draft")
        for version in range(7):
            await draft.edit(content=f"version {version}")

    edits = [r for r in emu.requests if r.route == EDIT_ROUTE]
    assert [r.status for r in edits] == [200] * 7
    assert emu.stats.violations == 0 and emu.stats.rate_limited == 0
    # discord.py held the sixth edit until the window announced by the headers had passed.
    assert edits[5].time - edits[0].time >= 1.5
    shown = emu.message(draft.id)
    assert shown is not None and shown.content == "version 6" and shown.edit_count == 7


async def test_client_ignoring_the_headers_gets_429s_counted_as_violations(scene: Scene) -> None:
    emu = scene.emu
    emu.set_bucket(CREATE_ROUTE, limit=5, per=60.0)
    url = f"{emu.api_base_url}/channels/{scene.channel_id}/messages"
    async with aiohttp.ClientSession(headers=bot_headers()) as http:
        answers = []
        for n in range(7):
            async with http.post(url, json={"content": f"spam {n}"}) as response:
                answers.append((response.status, dict(response.headers), await response.read()))

    assert [status for status, _, _ in answers] == [200] * 5 + [429] * 2
    _, ok_headers, _ = answers[0]
    assert ok_headers["Content-Type"] == "application/json"
    assert ok_headers["X-RateLimit-Limit"] == "5" and ok_headers["X-RateLimit-Remaining"] == "4"
    assert 59.0 < float(ok_headers["X-RateLimit-Reset-After"]) <= 60.0
    assert ok_headers["X-RateLimit-Bucket"] and float(ok_headers["X-RateLimit-Reset"]) > 0
    _, limited_headers, limited_body = answers[5]
    assert limited_headers["Via"] and limited_headers["X-RateLimit-Scope"] == "user"
    assert int(limited_headers["Retry-After"]) >= 59
    body = json.loads(limited_body)
    assert body["global"] is False and 59.0 < body["retry_after"] <= 60.0 and body["message"]
    assert emu.stats.violations == 2 and emu.stats.violations_by_route[CREATE_ROUTE] == 2
    assert len(emu.messages(scene.channel_id)) == 5


async def test_global_limit_applies_across_routes(scene: Scene) -> None:
    emu = scene.emu
    async with aiohttp.ClientSession(headers=bot_headers()) as http:
        statuses = []
        for _ in range(51):
            async with http.get(f"{emu.api_base_url}/users/@me") as response:
                statuses.append(response.status)
                if response.status == 429:
                    assert response.headers["X-RateLimit-Global"] == "true"
                    assert (await response.json())["global"] is True
    assert statuses == [200] * 50 + [429]
    assert emu.stats.violations_by_route["global"] == 1


async def test_enforce_nonce_answers_a_repeated_create_with_the_message_it_made() -> None:
    now = [100.0]
    async with DiscordEmulator(token=TOKEN, clock=lambda: now[0]) as emu:
        guild_id = emu.add_guild("Test Guild")
        general = emu.add_text_channel(guild_id, "general")
        other = emu.add_text_channel(guild_id, "other")
        posted: list[int] = []
        emu.subscribe(lambda c: posted.append(c.channel_id) if c.kind == "posted" else None)
        messages = f"{emu.api_base_url}/channels/{general}/messages"

        async with aiohttp.ClientSession(headers=bot_headers()) as http:

            async def create(channel_id: int, **body: Any) -> tuple[int, Any]:
                url = f"{emu.api_base_url}/channels/{channel_id}/messages"
                async with http.post(url, json=body) as response:
                    return response.status, await response.json()

            status, first = await create(general, content="first", nonce="n-1", enforce_nonce=True)
            assert status == 200 and first["nonce"] == "n-1"
            # The same nonce again: the message it made, unchanged, and nothing new.
            status, again = await create(
                general, content="first, again", nonce="n-1", enforce_nonce=True
            )
            assert status == 200 and again["id"] == first["id"] and again["content"] == "first"
            assert posted == [general]
            # Nonces are remembered per channel, and only enforced when asked.
            _, elsewhere = await create(other, content="first", nonce="n-1", enforce_nonce=True)
            _, echoed = await create(general, content="not enforced", nonce="n-1")
            assert echoed["nonce"] == "n-1"
            assert len({first["id"], elsewhere["id"], echoed["id"]}) == 3
            # Its message deleted, the nonce finds nothing to return (discord.py: NotFound).
            async with http.delete(f"{messages}/{first['id']}") as response:
                assert response.status == 204
            status, gone = await create(general, content="first", nonce="n-1", enforce_nonce=True)
            assert status == 404 and gone["code"] == 10008
            # A few minutes later the nonce is free again.
            now[0] += 301.0
            _, later = await create(general, content="later", nonce="n-1", enforce_nonce=True)
            assert later["id"] not in (first["id"], echoed["id"])

            status, too_long = await create(general, content="x", nonce="n" * 26)
            assert status == 400 and too_long["code"] == 50035 and "nonce" in too_long["errors"]

        assert posted == [general, other, general, general]
        assert [m.content for m in emu.messages(general)] == ["not enforced", "later"]


async def test_injected_server_errors_come_before_or_after_the_create_took_effect(
    scene: Scene,
) -> None:
    emu = scene.emu
    emu.set_bucket(CREATE_ROUTE, limit=50, per=5.0)
    url = f"{emu.api_base_url}/channels/{scene.channel_id}/messages"
    async with aiohttp.ClientSession(headers=bot_headers()) as http:

        async def create(**body: Any) -> tuple[int, Any]:
            async with http.post(url, json=body) as response:
                assert response.headers["Content-Type"] == "application/json"
                return response.status, await response.json()

        emu.inject_server_error(CREATE_ROUTE, status=502, channel_id=scene.channel_id)
        assert await create(content="lost") == (502, {"message": "502: Bad Gateway", "code": 0})
        assert emu.messages(scene.channel_id) == []

        # Created, then answered 500: a retry posts again, unless the nonce is enforced.
        emu.inject_server_error(CREATE_ROUTE, count=3, channel_id=scene.channel_id, applied=True)
        for _ in range(2):
            assert (await create(content="twice"))[0] == 500
        assert (await create(content="once", nonce="r-1", enforce_nonce=True))[0] == 500
        status, once = await create(content="once", nonce="r-1", enforce_nonce=True)
        assert status == 200
    assert [m.content for m in emu.messages(scene.channel_id)] == ["twice", "twice", "once"]
    assert once["id"] == str(emu.messages(scene.channel_id)[-1].id)

    # discord.py sends every create with a nonce of its own and enforce_nonce, and retries a 500
    # itself: its retry finds the message the failed attempt made.
    async with running_bot(emu) as bot:
        channel = bot.get_channel(scene.channel_id)
        assert isinstance(channel, discord.TextChannel)
        emu.inject_server_error(CREATE_ROUTE, channel_id=scene.channel_id, applied=True)
        sent = await channel.send("retried by discord.py")

    shown = emu.messages(scene.channel_id)
    assert [m.content for m in shown[3:]] == ["retried by discord.py"] and sent.id == shown[3].id
    attempts = [r for r in emu.requests if r.route == CREATE_ROUTE][-2:]
    assert [r.status for r in attempts] == [500, 200]
    assert attempts[0].json["nonce"] == attempts[1].json["nonce"]
    assert attempts[1].json["enforce_nonce"] is True
    assert emu.stats.server_errors == 5


async def test_rest_errors_use_discord_shapes(scene: Scene) -> None:
    emu = scene.emu
    with discord_pointed_at(emu):
        stranger = discord.Client(intents=bot_intents())
        with pytest.raises(discord.LoginFailure):
            await stranger.login("wrong-token")
        await stranger.close()
    async with running_bot(emu) as bot:
        channel = bot.get_channel(scene.channel_id)
        assert isinstance(channel, discord.TextChannel)
        with pytest.raises(discord.HTTPException) as too_long:
            await channel.send("x" * 2001)
        assert too_long.value.status == 400 and too_long.value.code == 50035
        assert "content" in too_long.value.text
        user_message = await emu.user_message(scene.channel_id, scene.alice, "mine")
        with pytest.raises(discord.Forbidden) as forbidden:
            await channel.get_partial_message(user_message).edit(content="hijacked")
        assert forbidden.value.code == 50005
    shown = emu.message(user_message)
    assert shown is not None and shown.content == "mine"
    assert [m.content for m in emu.messages(scene.channel_id)] == ["mine"]


async def test_privileged_intent_not_granted_closes_with_4014(scene: Scene) -> None:
    scene.emu.message_content_intent = False
    with pytest.raises(discord.PrivilegedIntentsRequired):
        async with running_bot(scene.emu, intents=bot_intents(message_content=True)):
            pass
    assert scene.emu.stats.identifies == 0


async def test_without_content_intent_only_mentions_and_dms_carry_content(scene: Scene) -> None:
    emu = scene.emu
    async with running_bot(emu, intents=bot_intents(message_content=False)) as bot:
        plain_id = await emu.user_message(scene.channel_id, scene.alice, "hi")
        plain = await on_message_of(bot, plain_id)
        mention_id = await emu.user_message(scene.channel_id, scene.alice, "hi", mention_bot=True)
        mention = await on_message_of(bot, mention_id)
        dm_id = await emu.user_message(emu.dm_channel(scene.alice), scene.alice, "hi in private")
        dm = await on_message_of(bot, dm_id)
    assert plain.content == ""
    assert mention.content == f"<@{emu.bot_user_id}> hi"
    assert dm.content == "hi in private"


async def test_gateway_protocol_on_the_wire(scene: Scene) -> None:
    emu = scene.emu
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(emu.gateway_url + "?v=10&encoding=json") as ws:
            hello = await ws.receive_json()
            assert hello["op"] == 10 and hello["d"]["heartbeat_interval"] == 41250
            await ws.send_json({"op": 1, "d": None})
            assert (await ws.receive_json())["op"] == 11
            await ws.send_json({"op": 2, "d": {"token": "wrong", "intents": 513, "properties": {}}})
            await ws.receive()
            assert ws.close_code == 4004

        async with http.ws_connect(emu.gateway_url) as ws:
            await ws.receive_json()
            identify = {"token": TOKEN, "intents": 513, "shard": [0, 1], "properties": {}}
            await ws.send_json({"op": 2, "d": identify})
            ready = await ws.receive_json()
            assert (ready["op"], ready["t"], ready["s"]) == (0, "READY", 1)
            assert ready["d"]["resume_gateway_url"] == emu.gateway_url
            assert ready["d"]["shard"] == [0, 1]
            assert ready["d"]["guilds"] == [{"id": str(scene.guild_id), "unavailable": True}]
            guild = await ws.receive_json()
            assert (guild["t"], guild["s"]) == ("GUILD_CREATE", 2)
            assert all("flags" in member for member in guild["d"]["members"])
            message_id = await emu.user_message(scene.channel_id, scene.alice, "secret sauce")
            created = await ws.receive_json()
            assert (created["t"], created["s"]) == ("MESSAGE_CREATE", 3)
            assert created["d"]["id"] == str(message_id) and created["d"]["content"] == ""
            assert "member" in created["d"] and created["d"]["guild_id"] == str(scene.guild_id)


async def test_dropped_gateway_resumes_and_replays(scene: Scene) -> None:
    emu = scene.emu
    async with running_bot(emu) as bot:
        first_id = await emu.user_message(scene.channel_id, scene.alice, "before the drop")
        await on_message_of(bot, first_id)
        assert await emu.drop_gateway(outage=0.2) == 1
        missed_id = await emu.user_message(scene.channel_id, scene.alice, "while disconnected")
        await bot.next_event("resumed")
        assert (await on_message_of(bot, missed_id)).content == "while disconnected"
        assert emu.stats.resumes == 1 and emu.stats.identifies == 1 and emu.stats.replayed >= 1

        await emu.replay(first_id)
        await wait_until(lambda: len(bot.seen("message", lambda m: m.id == first_id)) == 2)


async def test_slash_commands_are_synced_invoked_and_answered(scene: Scene) -> None:
    emu = scene.emu
    trees: list[app_commands.CommandTree[Any]] = []

    def register(client: RecordingClient) -> None:
        tree = app_commands.CommandTree(client)
        trees.append(tree)

        @tree.command(name="reset", description="Forget this chat")
        async def reset(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("Chat reset.")

        @tree.command(name="ask", description="Ask the model")
        async def ask(interaction: discord.Interaction, question: str) -> None:
            await interaction.response.defer(thinking=True)
            await interaction.followup.send(f"You asked: {question}")

    async with running_bot(emu, before_connect=register):
        synced = await trees[0].sync()
        assert {c.name for c in synced} == {c.name for c in emu.commands} == {"reset", "ask"}

        reset_id = await emu.slash_command(scene.channel_id, scene.alice, "reset")
        await wait_until(lambda: emu.interaction(reset_id).response_type)
        ask_id = await emu.slash_command(scene.channel_id, scene.alice, "ask", {"question": "why?"})
        # The deferred "thinking..." message (flag LOADING, 128) is replaced by the follow-up.
        await wait_until(lambda: emu.interaction(ask_id).message_id)
        answer_id = emu.interaction(ask_id).message_id or 0
        await wait_until(lambda: getattr(emu.message(answer_id), "flags", 128) & 128 == 0)

    reset = emu.interaction(reset_id)
    assert reset.response_type == 4 and reset.response is not None
    assert reset.response["data"]["content"] == "Chat reset."
    shown = emu.message(reset.message_id or 0)
    assert shown is not None and shown.content == "Chat reset." and shown.type == 20
    ask = emu.interaction(ask_id)
    assert ask.response_type == 5 and ask.followup_ids == ()
    assert ask.options == ({"name": "question", "type": 3, "value": "why?"},)
    answer = emu.message(answer_id)
    assert answer is not None and answer.content == "You asked: why?"


async def test_late_interaction_response_is_unknown() -> None:
    async with DiscordEmulator(token=TOKEN, interaction_ack_timeout=0.1) as emu:
        guild_id = emu.add_guild("Test Guild")
        channel_id = emu.add_text_channel(guild_id, "general")
        alice = emu.add_user("alice")
        failures: list[discord.NotFound] = []
        trees: list[app_commands.CommandTree[Any]] = []

        def register(client: RecordingClient) -> None:
            tree = app_commands.CommandTree(client)
            trees.append(tree)

            @tree.command(name="slow", description="Answers too late")
            async def slow(interaction: discord.Interaction) -> None:
                await asyncio.sleep(0.2)
                try:
                    await interaction.response.send_message("too late")
                except discord.NotFound as error:
                    failures.append(error)

        async with running_bot(emu, before_connect=register):
            await trees[0].sync()
            interaction_id = await emu.slash_command(channel_id, alice, "slow")
            await wait_until(lambda: failures)
        assert failures[0].code == 10062  # Unknown interaction: the 3-second window passed
        assert emu.interaction(interaction_id).response_type is None
        assert emu.messages(channel_id) == []


async def test_roles_and_categories_reach_discord_py(scene: Scene) -> None:
    emu = scene.emu
    category = emu.add_category(scene.guild_id, "Support")
    help_id = emu.add_text_channel(scene.guild_id, "help", category=category)
    staff = emu.add_role(scene.guild_id, "Staff")
    emu.give_role(scene.guild_id, scene.alice, staff)
    async with running_bot(emu) as bot:
        guild = bot.get_guild(scene.guild_id)
        assert guild is not None
        assert isinstance(guild.get_channel(category), discord.CategoryChannel)
        help_channel = guild.get_channel(help_id)
        assert isinstance(help_channel, discord.TextChannel)
        assert help_channel.category_id == category
        general = guild.get_channel(scene.channel_id)
        assert isinstance(general, discord.TextChannel) and general.category_id is None
        role = guild.get_role(staff)
        assert role is not None and role.name == "Staff" and not role.managed

        # Added while connected: GUILD_ROLE_CREATE, and it is known before the next message.
        late = emu.add_role(scene.guild_id, "Late")
        emu.give_role(scene.guild_id, scene.alice, late)
        message_id = await emu.user_message(help_id, scene.alice, "hi")
        message = await on_message_of(bot, message_id)
    assert isinstance(message.author, discord.Member)
    assert {r.id for r in message.author.roles} == {scene.guild_id, staff, late}
    assert message.channel.id == help_id


async def test_member_payloads_list_the_roles_given(scene: Scene) -> None:
    emu = scene.emu
    staff = emu.add_role(scene.guild_id, "Staff")
    emu.give_role(scene.guild_id, scene.alice, staff)
    message_id = await emu.user_message(scene.channel_id, scene.alice, "hi")
    guild = emu.world.guilds[scene.guild_id]
    stored = emu.world.message(scene.channel_id, message_id)
    assert stored is not None
    payload = emu.feed.wire.message(stored)
    assert payload["member"]["roles"] == [str(staff)]  # never @everyone
    assert "user" not in payload["member"]
    full = emu.feed.wire.guild_create(guild, all_members=True)
    roles = {r["name"]: r for r in full["roles"]}
    assert list(roles) == ["@everyone", "bridge-bot", "Staff"]
    assert roles["@everyone"]["id"] == str(scene.guild_id)
    assert roles["bridge-bot"]["managed"] and roles["bridge-bot"]["tags"]
    members = {m["user"]["id"]: m["roles"] for m in full["members"]}
    assert members[str(scene.alice)] == [str(staff)]
    assert members[str(emu.bot_user_id)] == [roles["bridge-bot"]["id"]]


def admin_tree(
    trees: list[app_commands.CommandTree[Any]], seen: list[discord.Interaction]
) -> Callable[[RecordingClient], None]:
    """A tree with /ping for everyone and /admin (Manage Server) with two subcommands."""

    def register(client: RecordingClient) -> None:
        tree = app_commands.CommandTree(client)
        trees.append(tree)

        @tree.command(name="ping", description="Anyone")
        async def ping(interaction: discord.Interaction) -> None:
            seen.append(interaction)
            await interaction.response.send_message("pong", ephemeral=True)

        admin = app_commands.Group(
            name="admin",
            description="Admins only",
            default_permissions=discord.Permissions(manage_guild=True),
        )

        @admin.command(name="mode", description="Set the mode")
        @app_commands.choices(
            mode=[app_commands.Choice(name=v, value=v) for v in ("quiet", "loud")]
        )
        async def mode(interaction: discord.Interaction, mode: str) -> None:
            seen.append(interaction)
            await interaction.response.send_message(f"mode {mode}", ephemeral=True)

        @admin.command(name="status", description="Show the status")
        async def status(interaction: discord.Interaction) -> None:
            seen.append(interaction)
            await interaction.response.send_message("fine", ephemeral=True)

        tree.add_command(admin)

    return register


async def test_interactions_carry_the_member_with_roles_and_permissions(scene: Scene) -> None:
    emu = scene.emu
    bob = emu.add_user("bob")
    staff = emu.add_role(scene.guild_id, "Staff")
    emu.give_role(scene.guild_id, bob, staff)
    admins = emu.make_admin(scene.guild_id, bob)
    trees: list[app_commands.CommandTree[Any]] = []
    seen: list[discord.Interaction] = []
    async with running_bot(emu, before_connect=admin_tree(trees, seen)):
        await trees[0].sync()
        await emu.slash_command(scene.channel_id, scene.alice, "ping")
        await emu.slash_command(scene.channel_id, bob, "admin mode", {"mode": "loud"})
        dm = emu.dm_channel(scene.alice)
        await emu.slash_command(dm, scene.alice, "ping")
        await wait_until(lambda: len(seen) == 3)
    member, admin, in_dm = seen
    assert isinstance(member.user, discord.Member) and member.guild_id == scene.guild_id
    assert not member.permissions.manage_guild and member.permissions.send_messages
    assert isinstance(admin.user, discord.Member)
    assert {r.id for r in admin.user.roles} == {scene.guild_id, staff, admins}
    assert admin.permissions.administrator and admin.permissions.manage_guild
    assert admin.namespace.mode == "loud"
    # In a DM there is no member: the user, and no guild.
    assert type(in_dm.user) is discord.User and in_dm.guild_id is None


async def test_subcommand_options_are_sent_as_discords_client_sends_them(scene: Scene) -> None:
    emu = scene.emu
    emu.make_admin(scene.guild_id, scene.alice)
    trees: list[app_commands.CommandTree[Any]] = []
    seen: list[discord.Interaction] = []
    async with running_bot(emu, before_connect=admin_tree(trees, seen)):
        await trees[0].sync()
        mode_id = await emu.slash_command(
            scene.channel_id, scene.alice, "admin mode", {"mode": "quiet"}
        )
        status_id = await emu.slash_command(scene.channel_id, scene.alice, "admin status")
        with pytest.raises(ValueError, match="not one of"):
            await emu.slash_command(scene.channel_id, scene.alice, "admin mode", {"mode": "x"})
        with pytest.raises(ValueError, match="needs mode"):
            await emu.slash_command(scene.channel_id, scene.alice, "admin mode")
        with pytest.raises(ValueError, match="needs a subcommand"):
            await emu.slash_command(scene.channel_id, scene.alice, "admin")
        with pytest.raises(LookupError, match="no subcommand"):
            await emu.slash_command(scene.channel_id, scene.alice, "admin reboot")
        await wait_until(lambda: emu.interaction(status_id).response_type)
        await wait_until(lambda: emu.interaction(mode_id).response_type)
    assert emu.interaction(mode_id).options == (
        {"name": "mode", "type": 1, "options": [{"name": "mode", "type": 3, "value": "quiet"}]},
    )
    assert emu.interaction(status_id).options == ({"name": "status", "type": 1, "options": []},)
    assert [i.command.qualified_name for i in seen if i.command] == ["admin mode", "admin status"]
    assert len(emu.interactions) == 2  # the refused ones never reached the bot


async def test_default_member_permissions_decide_who_may_invoke(scene: Scene) -> None:
    emu = scene.emu
    bob = emu.add_user("bob")
    carol = emu.add_user("carol")
    managers = emu.add_role(scene.guild_id, "Managers", permissions=1 << 5)
    emu.give_role(scene.guild_id, carol, managers)
    trees: list[app_commands.CommandTree[Any]] = []
    seen: list[discord.Interaction] = []
    async with running_bot(emu, before_connect=admin_tree(trees, seen)):
        await trees[0].sync()
        with pytest.raises(PermissionError, match="default_member_permissions"):
            await emu.slash_command(scene.channel_id, bob, "admin status")
        await emu.slash_command(scene.channel_id, carol, "admin status")  # Manage Server
        emu.make_admin(scene.guild_id, bob)  # Administrator has every permission
        await emu.slash_command(scene.channel_id, bob, "admin status")
        # Permissions are a guild's: in a DM there is no member to check.
        await emu.slash_command(emu.dm_channel(bob), bob, "admin status")
        await wait_until(lambda: len(seen) == 3)
        async with aiohttp.ClientSession() as http:
            path = f"/applications/{emu.application_id}/commands"
            async with http.get(emu.api_base_url + path, headers=bot_headers()) as response:
                listed = {c["name"]: c for c in await response.json()}
    assert listed["admin"]["default_member_permissions"] == str(1 << 5)  # a string, as Discord
    assert listed["ping"]["default_member_permissions"] is None


async def test_zero_permissions_leave_a_command_to_administrators(scene: Scene) -> None:
    emu = scene.emu
    managers = emu.add_role(scene.guild_id, "Managers", permissions=1 << 5)
    emu.give_role(scene.guild_id, scene.alice, managers)
    payload = {"name": "nuke", "description": "Admins only", "default_member_permissions": "0"}
    guild_only = {"name": "here", "description": "Servers only", "contexts": [0]}
    emu.world.overwrite_commands(None, [payload, guild_only])
    with pytest.raises(PermissionError):
        await emu.slash_command(scene.channel_id, scene.alice, "nuke")
    emu.make_admin(scene.guild_id, scene.alice)
    await emu.slash_command(scene.channel_id, scene.alice, "nuke")
    with pytest.raises(PermissionError, match="not usable in DMs"):
        await emu.slash_command(emu.dm_channel(scene.alice), scene.alice, "here")


@pytest.mark.parametrize(
    ("options", "error_path"),
    [
        pytest.param(
            [{"type": 3, "name": "text", "description": "x" * 101}],
            ["0", "options", "0", "description"],
            id="option description over 100",
        ),
        pytest.param(
            [
                {"type": 3, "name": "maybe", "description": "optional"},
                {"type": 3, "name": "must", "description": "required", "required": True},
            ],
            ["0", "options", "1"],
            id="required after optional",
        ),
        pytest.param(
            [
                {"type": 1, "name": "sub", "description": "a subcommand"},
                {"type": 3, "name": "text", "description": "a value"},
            ],
            ["0", "options"],
            id="subcommands beside values",
        ),
        pytest.param(
            [{"type": 3, "name": "Text", "description": "capital"}],
            ["0", "options", "0", "name"],
            id="option name with a capital",
        ),
    ],
)
async def test_invalid_command_options_are_refused_whole(
    scene: Scene, options: list[dict[str, Any]], error_path: list[str]
) -> None:
    command = {"name": "cmd", "description": "A command", "type": 1, "options": options}
    url = f"{scene.emu.api_base_url}/applications/{scene.emu.application_id}/commands"
    async with aiohttp.ClientSession() as http:
        async with http.put(url, json=[command], headers=bot_headers()) as response:
            body = await response.json()
    assert response.status == 400 and body["code"] == 50035
    errors = body["errors"]
    for key in error_path:
        errors = errors[key]
    assert "_errors" in errors
    assert scene.emu.commands == []


# --- shards --------------------------------------------------------------------------------


async def identify(http: aiohttp.ClientSession, url: str, shard: list[int] | None) -> Any:
    """A raw gateway session with `shard` (none: unsharded); returns its socket after READY."""
    ws = await http.ws_connect(url)
    await ws.receive_json()  # HELLO
    data: dict[str, Any] = {"token": TOKEN, "intents": 1 | 1 << 9 | 1 << 12, "properties": {}}
    if shard is not None:
        data["shard"] = shard
    await ws.send_json({"op": 2, "d": data})
    return ws


async def next_dispatch(ws: Any, event: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            frame = await ws.receive_json()
            if frame.get("t") == event:
                return dict(frame["d"])


async def test_each_shard_gets_its_guilds_and_shard_0_the_dms() -> None:
    async with DiscordEmulator(token=TOKEN) as emu, aiohttp.ClientSession() as http:
        zero = emu.add_guild("Zero", shard=(0, 2))
        one = emu.add_guild("One", shard=(1, 2))
        channels = {g: emu.add_text_channel(g, "general") for g in (zero, one)}
        alice = emu.add_user("alice")
        sessions = [await identify(http, emu.gateway_url, [i, 2]) for i in (0, 1)]
        readies = [await next_dispatch(ws, "READY") for ws in sessions]
        assert [r["guilds"] for r in readies] == [
            [{"id": str(zero), "unavailable": True}],
            [{"id": str(one), "unavailable": True}],
        ]
        assert [(await next_dispatch(ws, "GUILD_CREATE"))["id"] for ws in sessions] == [
            str(zero),
            str(one),
        ]
        assert sorted(emu.connected_shards, key=str) == [(0, 2), (1, 2)]

        # Dispatched in this order: a session's next MESSAGE_CREATE shows what it was sent.
        in_one = await emu.user_message(channels[one], alice, "in guild one")
        dm = await emu.user_message(emu.dm_channel(alice), alice, "a DM")
        in_zero = await emu.user_message(channels[zero], alice, "in guild zero")
        assert (await next_dispatch(sessions[0], "MESSAGE_CREATE"))["id"] == str(dm)
        assert (await next_dispatch(sessions[0], "MESSAGE_CREATE"))["id"] == str(in_zero)
        assert (await next_dispatch(sessions[1], "MESSAGE_CREATE"))["id"] == str(in_one)
        later = emu.add_guild("Later", shard=(1, 2))  # joined while connected
        assert (await next_dispatch(sessions[1], "GUILD_CREATE"))["id"] == str(later)
        for ws in sessions:
            await ws.close()


async def test_a_wrong_shard_closes_with_4010_and_too_many_guilds_with_4011() -> None:
    async with DiscordEmulator(token=TOKEN, max_guilds_per_shard=1) as emu:
        emu.add_guild("Zero", shard=(0, 2))
        emu.add_guild("One", shard=(1, 2))
        async with aiohttp.ClientSession() as http:
            for shard in ([2, 2], [-1, 2], [0], [True, 2]):
                ws = await identify(http, emu.gateway_url, shard)
                await ws.receive()
                assert ws.close_code == 4010, shard
            ws = await identify(http, emu.gateway_url, None)  # both guilds on one session
            await ws.receive()
            assert ws.close_code == 4011
            ws = await identify(http, emu.gateway_url, [1, 2])
            assert (await next_dispatch(ws, "READY"))["shard"] == [1, 2]
            await ws.close()
        assert emu.stats.identifies == 1


async def test_gateway_bot_recommends_the_shards_and_counts_session_starts() -> None:
    async with DiscordEmulator(token=TOKEN, shard_count=3) as emu, aiohttp.ClientSession() as http:
        url = f"{emu.api_base_url}/gateway/bot"
        async with http.get(url, headers=bot_headers()) as response:
            before = await response.json()
        ws = await identify(http, emu.gateway_url, [0, 3])
        await next_dispatch(ws, "READY")
        async with http.get(url, headers=bot_headers()) as response:
            after = await response.json()
        await ws.close()
    assert before["shards"] == 3 and before["url"] == emu.gateway_url
    limit = before["session_start_limit"]
    assert limit["max_concurrency"] == 1 and limit["remaining"] == limit["total"]
    assert after["session_start_limit"]["remaining"] == limit["total"] - 1


class QuickShardedClient(discord.AutoShardedClient):
    """discord.py's sharded client, without its 5 s wait between the shards' IDENTIFYs."""

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        return None


async def test_discord_py_auto_sharded_client_asks_for_the_shards_and_gets_every_guild() -> None:
    async with DiscordEmulator(token=TOKEN, shard_count=2) as emu:
        guilds = [emu.add_guild(f"G{i}", shard=(i, 2)) for i in (0, 1)]
        channels = [emu.add_text_channel(g, "general") for g in guilds]
        alice = emu.add_user("alice")
        with discord_pointed_at(emu):
            client = QuickShardedClient(intents=bot_intents(), guild_ready_timeout=0.05)
            seen: list[tuple[int | None, str]] = []

            @client.event
            async def on_message(message: discord.Message) -> None:
                seen.append((message.guild.shard_id if message.guild else None, message.content))

            await client.login(TOKEN)
            connection = asyncio.create_task(client.connect())
            try:
                await asyncio.wait_for(client.wait_until_ready(), 10)
                assert client.shard_count == 2 and sorted(client.shards) == [0, 1]
                assert sorted(g.id for g in client.guilds) == sorted(guilds)
                for channel, text in zip(channels, ("zero", "one"), strict=True):
                    await emu.user_message(channel, alice, text)
                await wait_until(lambda: len(seen) == 2)
            finally:
                await client.close()
                await asyncio.wait_for(connection, 5)
    assert sorted(seen, key=str) == [(0, "zero"), (1, "one")]
    assert emu.stats.requests["GET /gateway/bot"] == 1


# --- history ---------------------------------------------------------------------------------


async def test_history_pages_by_after_and_before_and_holds_messages_sent_earlier(
    scene: Scene,
) -> None:
    emu = scene.emu
    # Sent while no bot listened: in the history with the ids of then, nothing dispatched.
    old = [
        await emu.user_message(scene.channel_id, scene.alice, f"old {n}", age=600 - n)
        for n in range(3)
    ]
    async with running_bot(emu) as bot:
        new = await emu.user_message(scene.channel_id, scene.alice, "new", mention_bot=True)
        channel = bot.get_channel(scene.channel_id)
        assert isinstance(channel, discord.TextChannel)
        everything = [m async for m in channel.history(limit=None, oldest_first=True)]
        after_first = [m async for m in channel.history(limit=2, after=discord.Object(old[0]))]
        before_new = [m async for m in channel.history(limit=10, before=discord.Object(new))]
        fetched = await channel.fetch_message(new)
        member = await channel.guild.fetch_member(scene.alice)
    assert bot.seen("message", lambda m: m.id in old) == []
    assert [m.id for m in everything] == [*old, new]
    assert [m.id for m in after_first] == old[1:3]  # the oldest two after it, oldest first
    assert [m.id for m in before_new] == old[::-1]  # newest first
    # Created `age` seconds ago, by their ids.
    assert (everything[3].created_at - everything[0].created_at).total_seconds() > 590
    # As on Discord, a message read over REST carries no member objects: its author is a User.
    assert not isinstance(fetched.author, discord.Member)
    assert [u.id for u in fetched.mentions] == [emu.bot_user_id]
    assert member.id == scene.alice and member.guild.id == scene.guild_id
