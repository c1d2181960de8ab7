"""The bridge's slash commands on Discord, translated to the core's admin commands.

`/reset` is for everyone (unless `access.reset = "admins"`); `/bridge <subcommand> [argument]`
holds the admin commands of `bridge.admin.COMMANDS`. Discord's client offers `/bridge` only to
members with Manage Server (`default_member_permissions`, which a server's admins can change in
Server Settings → Integrations); the core checks `access.admins` whoever runs it. Every answer is
ephemeral and pings no one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import discord
from discord import app_commands

from adapters.discord.events import PLATFORM, origin_at, place_ids, role_ids
from bridge.admin import COMMANDS, AdminCommands, CommandSpec
from bridge.policy.origin import Origin
from bridge.ports import ChatStore
from bridge.segments import layout

Tree = app_commands.CommandTree[discord.Client]
Answer = Callable[[discord.Interaction, str, str], Coroutine[Any, Any, None]]

log = logging.getLogger(__name__)

# Manage Server: who may see and use /bridge (and /reset with access.reset = "admins") by default.
ADMIN_PERMISSIONS = discord.Permissions(manage_guild=True)
# Discord wants an answer within 3 seconds; a command still running after this is deferred (the
# user sees "thinking…") and answered when it is done.
DEFER_AFTER = 1.5
MESSAGE_LIMIT = 2000
FAILED = "That did not work: the bridge could not run the command. Its log says why."
NO_PINGS = discord.AllowedMentions.none()
BRIDGE_DESCRIPTION = "Set up the bridge here (its admins only)."
ARGUMENT_DESCRIPTIONS = {
    "model": "The model's name, as the LLM server knows it.",
    "prompt": "The system prompt: what the model is told before each conversation.",
    "trigger": "mention: when called on; always: every message; off: never.",
}


def command_tree(
    client: discord.Client,
    *,
    store: ChatStore,
    commands: AdminCommands,
    reset_admins_only: bool = False,
    defer_after: float | None = None,
) -> Tree:
    tree: Tree = app_commands.CommandTree(client)
    defer_after = DEFER_AFTER if defer_after is None else defer_after
    answer = CommandAnswers(store, commands, defer_after=defer_after).answer

    async def reset(interaction: discord.Interaction) -> None:
        await answer(interaction, "reset", "")

    reset_spec = next(spec for spec in COMMANDS if spec.name == "reset")
    reset_command: app_commands.Command[Any, ..., None] = app_commands.Command(
        name="reset", description=reset_spec.description, callback=reset
    )
    if reset_admins_only:
        reset_command.default_permissions = ADMIN_PERMISSIONS
    tree.add_command(reset_command)

    bridge = app_commands.Group(
        name="bridge", description=BRIDGE_DESCRIPTION, default_permissions=ADMIN_PERMISSIONS
    )
    for spec in COMMANDS:
        if spec.admin_only:
            bridge.add_command(_subcommand(spec, answer))
    tree.add_command(bridge)
    return tree


def _subcommand(spec: CommandSpec, answer: Answer) -> app_commands.Command[Any, ..., None]:
    """`/bridge <spec.name>`, with its argument as a required string option (with its choices)."""
    if spec.argument is None:

        async def run(interaction: discord.Interaction) -> None:
            await answer(interaction, spec.name, "")

        return app_commands.Command(name=spec.name, description=spec.description, callback=run)

    async def run_with(interaction: discord.Interaction, argument: str) -> None:
        await answer(interaction, spec.name, argument)

    # The Python parameter is `argument`; Discord shows the spec's name for it.
    described = ARGUMENT_DESCRIPTIONS.get(spec.argument, f"The {spec.argument}.")
    callback = app_commands.rename(argument=spec.argument)(run_with)
    callback = app_commands.describe(argument=described)(callback)
    if spec.choices:
        choices = [app_commands.Choice(name=choice, value=choice) for choice in spec.choices]
        callback = app_commands.choices(argument=choices)(callback)
    return app_commands.Command(name=spec.name, description=spec.description, callback=callback)


class CommandAnswers:
    """Runs one interaction's command in the core and shows its answer to the invoker only."""

    def __init__(self, store: ChatStore, commands: AdminCommands, *, defer_after: float) -> None:
        self._store = store
        self._commands = commands
        self._defer_after = defer_after

    async def answer(self, interaction: discord.Interaction, name: str, argument: str) -> None:
        started = asyncio.get_running_loop().time()
        # A replayed INTERACTION_CREATE must not run twice (Discord refuses a second answer).
        if not await self._store.claim_event(PLATFORM, f"interaction:{interaction.id}"):
            return
        running = asyncio.ensure_future(
            self._commands.run(interaction_origin(interaction), name, argument)
        )
        left = self._defer_after - (asyncio.get_running_loop().time() - started)
        done, _ = await asyncio.wait({running}, timeout=max(left, 0.0))
        deferred = not done
        if deferred:
            try:
                await interaction.response.defer(ephemeral=True, thinking=True)
            except discord.HTTPException as exc:
                # Too late to answer (the 3 seconds passed): the command still does its work.
                log.warning("discord: /%s could not be deferred: %s", name, exc)
                await self._finished(running, name)
                return
        text = await self._finished(running, name)
        parts = [segment.final() for segment in layout(text, MESSAGE_LIMIT)] or [FAILED]
        if deferred:
            # Replaces the "thinking…" message, which is already ephemeral.
            await interaction.edit_original_response(content=parts[0], allowed_mentions=NO_PINGS)
        else:
            await interaction.response.send_message(
                parts[0], ephemeral=True, allowed_mentions=NO_PINGS
            )
        for part in parts[1:]:
            await interaction.followup.send(part, ephemeral=True, allowed_mentions=NO_PINGS)

    @staticmethod
    async def _finished(running: asyncio.Future[str], name: str) -> str:
        try:
            return await running
        except Exception:
            log.exception("discord: /%s could not be run", name)
            return FAILED


def interaction_origin(interaction: discord.Interaction) -> Origin:
    """Who runs the command, and where: the channel, thread and category as for a message."""
    parent_id, category_id = place_ids(interaction.channel)
    return origin_at(
        user_id=interaction.user.id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id or 0,
        parent_id=parent_id,
        category_id=category_id,
        role_ids=role_ids(interaction.user),
    )


async def sync_commands(tree: Tree, guilds: Sequence[int]) -> None:
    """Register the commands with Discord: in the listed guilds at once, else globally.

    A failure is logged, not fatal: mentions still work without the slash commands.
    """
    try:
        if not guilds:
            await tree.sync()
            return
        for guild_id in guilds:
            guild = discord.Object(id=guild_id)
            tree.copy_global_to(guild=guild)
            await tree.sync(guild=guild)
    except discord.Forbidden as exc:
        log.warning(
            "discord: could not register /reset and /bridge (%s); invite the bot with the "
            "applications.commands scope (`chat-bridge discord-invite`)",
            exc.text,
        )
    except discord.HTTPException as exc:
        log.warning("discord: could not register /reset and /bridge: %s", exc)
