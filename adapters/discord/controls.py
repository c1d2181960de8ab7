"""Clicks on a reply's buttons and 🛑 reactions, turned into the core's `ReplyControls` calls.

A click arrives as INTERACTION_CREATE type 3 (MESSAGE_COMPONENT). Any click with the bridge's
custom_id prefix is taken here, whichever process posted the button, and acknowledged at once
(type 6, nothing shown: Discord allows 3 seconds); then the Stop or the vote is made with the
clicker's `Origin`. A refused Stop is explained to the clicker alone (an ephemeral follow-up).
A 🛑 reaction on a reply or on the question it answers stops it the same way (silently).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import discord

from adapters.discord.commands import interaction_origin
from adapters.discord.components import PREFIX, STOP_ID, VOTE_PREFIX
from adapters.discord.events import chat_key, origin_at, place_ids, role_ids
from bridge.controls import VOTES, ReplyControls, StopOutcome
from bridge.domain import ChatKey
from bridge.policy.origin import Origin

log = logging.getLogger(__name__)

STOP_EMOJI = "\N{OCTAGONAL SIGN}"
REFUSED = "Only the person who asked or an admin can stop it."
FINISHED = "That reply is not running any more."
VOTED = {"up": "Thanks for the 👍.", "down": "Thanks for the 👎."}
NO_PINGS = discord.AllowedMentions.none()
ALREADY_ACKNOWLEDGED = 40060  # a replayed INTERACTION_CREATE: handled already


class ReplyButtons:
    """Takes the bridge's component interactions and 🛑 reactions for `ReplyControls`."""

    def __init__(self, controls: ReplyControls, *, bot_user_id: Callable[[], int | None]) -> None:
        self._controls = controls
        self._bot_user_id = bot_user_id

    @staticmethod
    def concerns(interaction: discord.Interaction) -> bool:
        """A click on one of the bridge's buttons (anything else is left to others)."""
        if interaction.type is not discord.InteractionType.component:
            return False
        return _custom_id(interaction).startswith(PREFIX)

    async def clicked(self, interaction: discord.Interaction) -> None:
        custom_id = _custom_id(interaction)
        acknowledged = await _acknowledge(interaction)
        if acknowledged is None:
            return  # Discord had this click answered already: a replay
        message = interaction.message
        if message is None:
            return
        origin = interaction_origin(interaction)
        # A reply points to its question.
        question = message.reference.message_id if message.reference is not None else None
        where = _places(interaction.guild_id, message.channel, message.channel.id, [question])
        if custom_id == STOP_ID:
            outcome = await self._stop(origin, where, str(message.id))
            answer = {StopOutcome.REFUSED: REFUSED, StopOutcome.NOT_RUNNING: FINISHED}
            if outcome in answer and acknowledged:
                await _tell(interaction, answer[outcome])
            return
        value = custom_id.removeprefix(VOTE_PREFIX)
        if not custom_id.startswith(VOTE_PREFIX) or value not in VOTES:
            log.info("discord: a click on an unknown button %r", custom_id)
            return
        for chat in where:
            if await self._controls.vote(origin, chat, str(message.id), value):
                if acknowledged:
                    await _tell(interaction, VOTED[value])
                return

    async def reacted(self, event: discord.RawReactionActionEvent, client: discord.Client) -> None:
        """A 🛑 on a reply (or its question) stops it, if the reacting person may."""
        if event.emoji.id is not None or (event.emoji.name or "").rstrip("\ufe0f") != STOP_EMOJI:
            return
        member = event.member
        if event.user_id == self._bot_user_id() or (member is not None and member.bot):
            return
        channel = client.get_channel(event.channel_id)
        parent_id, category_id = place_ids(channel)
        origin = origin_at(
            user_id=event.user_id,
            guild_id=event.guild_id,
            channel_id=event.channel_id,
            parent_id=parent_id,
            category_id=category_id,
            role_ids=role_ids(member) if member is not None else frozenset(),
        )
        message_id = str(event.message_id)
        # The reaction may be on the question itself.
        where = _places(event.guild_id, channel, event.channel_id, [event.message_id])
        outcome = await self._stop(origin, where, message_id)
        if outcome is StopOutcome.REFUSED:
            log.info("discord: 🛑 by %s on %s refused", event.user_id, message_id)

    async def _stop(self, origin: Origin, where: Sequence[ChatKey], message_id: str) -> StopOutcome:
        outcome = StopOutcome.NOT_RUNNING
        for chat in where:
            outcome = await self._controls.stop(origin, chat, message_id)
            if outcome is not StopOutcome.NOT_RUNNING:
                break
        return outcome


def _places(
    guild_id: int | None, channel: object, channel_id: int, questions: Sequence[int | None]
) -> list[ChatKey]:
    """The Chats a message may belong to, likeliest first: its channel's (a thread, a DM, a
    channel); in a guild text channel, also the Chats keyed by the ids of `questions` (with
    auto_thread a question's Chat has its id, and its reply is in the thread of that id, or in
    the channel when the thread could not be opened)."""
    keys = [chat_key(guild_id, channel_id)]
    if guild_id is None or isinstance(channel, discord.Thread):
        return keys
    for question in questions:
        if question and (key := chat_key(guild_id, question)) not in keys:
            keys.append(key)
    return keys


def _custom_id(interaction: discord.Interaction) -> str:
    data = cast("Mapping[str, Any]", interaction.data or {})
    custom_id = data.get("custom_id")
    return custom_id if isinstance(custom_id, str) else ""


async def _acknowledge(interaction: discord.Interaction) -> bool | None:
    """Type 6 (DEFERRED_UPDATE_MESSAGE). True when acknowledged, False when too late (the click
    still counts), None when Discord says it was acknowledged already."""
    try:
        await interaction.response.defer()
        return True
    except discord.HTTPException as exc:
        if exc.code == ALREADY_ACKNOWLEDGED:
            return None
        log.warning("discord: a click could not be acknowledged: %s", exc)
        return False


async def _tell(interaction: discord.Interaction, text: str) -> None:
    try:
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_PINGS)
    except discord.HTTPException as exc:
        log.warning("discord: could not answer a click: %s", exc)
