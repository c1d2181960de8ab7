"""The bridge's slash commands on Discord: /reset starts a fresh conversation in a channel.

The history stays in the database; /reset only moves the Chat's context floor, so the next reply
is written without the earlier messages.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import discord
from discord import app_commands

from adapters.discord.events import PLATFORM, chat_key
from bridge.ports import ChatStore

Tree = app_commands.CommandTree[discord.Client]

log = logging.getLogger(__name__)

RESET_DONE = "Started a fresh conversation."


def command_tree(client: discord.Client, store: ChatStore) -> Tree:
    tree: Tree = app_commands.CommandTree(client)

    @tree.command(
        name="reset",
        description="Start a fresh conversation here: the bot forgets the earlier messages.",
    )
    async def reset(interaction: discord.Interaction) -> None:
        # A replayed INTERACTION_CREATE must not answer twice (Discord refuses a second answer).
        if not await store.claim_event(PLATFORM, f"interaction:{interaction.id}"):
            return
        if interaction.channel_id is not None:
            chat = await store.get_chat(chat_key(interaction.guild_id, interaction.channel_id))
            if chat is not None:
                await store.reset_context(chat.id)
        await interaction.response.send_message(
            RESET_DONE, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )

    return tree


async def sync_commands(tree: Tree, guilds: Sequence[int]) -> None:
    """Register the commands with Discord: in the listed guilds at once, else globally.

    A failure is logged, not fatal: mentions still work without the slash command.
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
            "discord: could not register /reset (%s); invite the bot with the "
            "applications.commands scope (`chat-bridge discord-invite`)",
            exc.text,
        )
    except discord.HTTPException as exc:
        log.warning("discord: could not register /reset: %s", exc)
