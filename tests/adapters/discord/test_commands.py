"""/reset and /bridge: registered on start with their default permissions, run in the core with the
invoker's Origin, and answered ephemerally without pings."""

from __future__ import annotations

from typing import Any

import pytest

import adapters.discord.commands as discord_commands
from bridge.admin import COMMANDS, NOT_ADMIN, RESET_DONE
from bridge.policy.origin import Origin
from sandbox.discord_emulator.records import InteractionRecord
from tests.adapters.discord.conftest import Bridge, BridgeFactory, Scene, pings_no_one, wait_until

EPHEMERAL = 1 << 6
LOADING = 1 << 7
MANAGE_GUILD = str(1 << 5)


async def answered(bridge: Bridge, interaction_id: int) -> InteractionRecord:
    """The interaction once its answer shows (a deferred one: once the answer replaced it)."""
    emu = bridge.emu

    def done() -> InteractionRecord | None:
        record = emu.interaction(interaction_id)
        shown = emu.message(record.message_id or 0)
        return record if shown is not None and not shown.flags & LOADING else None

    record: InteractionRecord = await wait_until(done)
    return record


def shown_answer(bridge: Bridge, record: InteractionRecord) -> str:
    shown = bridge.emu.message(record.message_id or 0)
    assert shown is not None and shown.flags & EPHEMERAL
    return shown.content


def command_payload(scene: Scene, name: str) -> dict[str, Any]:
    return next(c.payload for c in scene.emu.commands if c.name == name)


async def test_reset_starts_a_fresh_conversation_and_keeps_the_history(
    make_bridge: BridgeFactory, scene: Scene
) -> None:
    emu = scene.emu
    async with make_bridge() as bridge:
        assert sorted((c.name, c.guild_id) for c in emu.commands) == [
            ("bridge", None),  # global
            ("reset", None),
        ]
        await bridge.mention("first question")
        await bridge.reply_shown("You said: first question")
        await bridge.settled()

        reset = await emu.slash_command(scene.channel_id, scene.bob, "reset")
        record = await answered(bridge, reset)

        await bridge.mention("second question")
        await bridge.reply_shown("You said: second question")
        await bridge.settled()
        kept = await bridge.store.messages(await bridge.chat_id())

    assert record.response_type == 4 and record.response is not None
    assert record.response["data"]["flags"] & EPHEMERAL
    assert pings_no_one(record.response["data"])
    assert shown_answer(bridge, record) == RESET_DONE
    [(origin, name, argument)] = bridge.core.commands.runs
    assert (name, argument) == ("reset", "")
    assert origin == Origin("discord", str(scene.bob), str(scene.guild_id), str(scene.channel_id))
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
    assert sorted((c.name, c.guild_id) for c in scene.emu.commands) == [
        ("bridge", scene.guild_id),
        ("reset", scene.guild_id),
    ]


async def test_bridge_holds_the_admin_commands_for_members_who_may_manage_the_server(
    make_bridge: BridgeFactory, scene: Scene
) -> None:
    async with make_bridge():
        bridge = command_payload(scene, "bridge")
        reset = command_payload(scene, "reset")
    assert bridge["default_member_permissions"] == int(MANAGE_GUILD)
    assert reset["default_member_permissions"] is None  # /reset is for everyone
    subcommands = {o["name"]: o for o in bridge["options"]}
    assert list(subcommands) == [spec.name for spec in COMMANDS if spec.admin_only]
    assert all(o["type"] == 1 for o in subcommands.values())
    [trigger] = subcommands["trigger"]["options"]
    assert (trigger["name"], trigger["type"], trigger["required"]) == ("trigger", 3, True)
    assert [c["value"] for c in trigger["choices"]] == ["mention", "always", "off"]
    [model] = subcommands["model"]["options"]
    assert (model["name"], model["type"], model.get("choices")) == ("model", 3, None)
    assert subcommands["usage"].get("options") in (None, [])


async def test_reset_is_for_admins_only_when_access_says_so(
    make_bridge: BridgeFactory, scene: Scene
) -> None:
    async with make_bridge(access={"reset": "admins"}):
        with pytest.raises(PermissionError):
            await scene.emu.slash_command(scene.channel_id, scene.bob, "reset")
    assert command_payload(scene, "reset")["default_member_permissions"] == int(MANAGE_GUILD)


async def test_an_admin_sets_the_trigger_and_every_message_there_is_answered(
    make_bridge: BridgeFactory, scene: Scene
) -> None:
    emu = scene.emu
    role = emu.add_role(scene.guild_id, "Moderators")
    emu.give_role(scene.guild_id, scene.alice, role)
    emu.make_admin(scene.guild_id, scene.alice)
    async with make_bridge(access={"admins": [str(scene.alice)]}) as bridge:
        command = await emu.slash_command(
            scene.channel_id, scene.alice, "bridge trigger", {"trigger": "always"}
        )
        record = await answered(bridge, command)
        # No mention: answered because of the trigger set here.
        await emu.user_message(scene.channel_id, scene.bob, "anyone there?")
        await bridge.reply_shown("You said: anyone there?")

    [(origin, name, argument)] = bridge.core.commands.runs
    assert (name, argument) == ("trigger", "always")
    assert origin.user == str(scene.alice) and origin.channel == str(scene.channel_id)
    assert role in {int(r) for r in origin.roles}
    assert record.options == (
        {
            "name": "trigger",
            "type": 1,
            "options": [{"name": "trigger", "type": 3, "value": "always"}],
        },
    )
    assert record.response is not None and pings_no_one(record.response["data"])
    assert shown_answer(bridge, record).startswith("trigger here is now 'always'")


async def test_a_member_without_manage_server_is_not_offered_bridge(
    make_bridge: BridgeFactory, scene: Scene
) -> None:
    async with make_bridge(access={"admins": [str(scene.bob)]}) as bridge:
        with pytest.raises(PermissionError, match="default_member_permissions"):
            await scene.emu.slash_command(scene.channel_id, scene.bob, "bridge usage")
        assert scene.emu.interactions == [] and bridge.core.commands.runs == []


async def test_the_core_refuses_a_server_manager_who_is_not_a_bridge_admin(
    make_bridge: BridgeFactory, scene: Scene
) -> None:
    emu = scene.emu
    managers = emu.add_role(scene.guild_id, "Managers", permissions=int(MANAGE_GUILD))
    emu.give_role(scene.guild_id, scene.bob, managers)
    async with make_bridge(access={"admins": [str(scene.alice)]}) as bridge:
        command = await emu.slash_command(
            scene.channel_id, scene.bob, "bridge model", {"model": "big-model"}
        )
        record = await answered(bridge, command)
    assert bridge.core.commands.runs[0][1:] == ("model", "big-model")
    assert shown_answer(bridge, record) == NOT_ADMIN


async def test_a_command_in_a_thread_of_a_categorised_channel_has_their_ids(
    make_bridge: BridgeFactory, scene: Scene
) -> None:
    emu = scene.emu
    category = emu.add_category(scene.guild_id, "Support")
    channel = emu.add_text_channel(scene.guild_id, "help", category=category)
    emu.make_admin(scene.guild_id, scene.alice)
    async with make_bridge(access={"admins": [str(scene.alice)]}) as bridge:
        thread = await emu.start_thread(channel, scene.alice, "printer trouble")
        command = await emu.slash_command(thread, scene.alice, "bridge settings")
        await answered(bridge, command)
    [(origin, _, _)] = bridge.core.commands.runs
    assert (origin.thread, origin.channel, origin.category) == (
        str(thread),
        str(channel),
        str(category),
    )
    assert origin.workspace == str(scene.guild_id) and not origin.is_dm


async def test_a_slow_command_is_deferred_then_answered_in_place(
    make_bridge: BridgeFactory, scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discord_commands, "DEFER_AFTER", 0.05)
    emu = scene.emu
    emu.make_admin(scene.guild_id, scene.alice)
    async with make_bridge(access={"admins": [str(scene.alice)]}) as bridge:
        bridge.core.commands.delay = 0.3
        command = await emu.slash_command(scene.channel_id, scene.alice, "bridge usage")
        record = await answered(bridge, command)
    assert record.response_type == 5  # deferred: "bridge-bot is thinking…"
    assert record.response is not None and record.response["data"]["flags"] & EPHEMERAL
    assert shown_answer(bridge, record).startswith("Tokens today")
    assert record.followup_ids == ()
    edit = next(r for r in emu.requests if r.route and "@original" in r.route)
    assert pings_no_one(edit.json)


async def test_a_dm_command_has_no_workspace(make_bridge: BridgeFactory, scene: Scene) -> None:
    emu = scene.emu
    dm = emu.dm_channel(scene.alice)
    async with make_bridge() as bridge:
        await answered(bridge, await emu.slash_command(dm, scene.alice, "reset"))
    [(origin, _, _)] = bridge.core.commands.runs
    assert origin == Origin("discord", str(scene.alice), "", str(dm), is_dm=True)
