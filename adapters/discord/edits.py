"""Users editing and deleting their messages (MESSAGE_UPDATE, MESSAGE_DELETE), for the core's
`UserEdits`: the stored history follows; nothing is answered again.

A MESSAGE_UPDATE is not always an edit: Discord also sends one when it adds link previews or a
message is pinned, with `edited_timestamp` unchanged. Only a change of the text is passed on,
keyed by the Chat the message belongs to as `events` keys it when it arrives.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import discord

from adapters.discord.events import (
    BotView,
    Place,
    chat_key,
    facts_of,
    message_chat_key,
    prompt_text,
)
from bridge.edits import UserEdits

log = logging.getLogger(__name__)


class MessageChanges:
    def __init__(self, edits: UserEdits, *, view: Callable[[], BotView | None]) -> None:
        self._edits = edits
        self._view = view

    async def edited(self, event: discord.RawMessageUpdateEvent) -> None:
        view = self._view()
        message = event.message
        if view is None or event.data.get("edited_timestamp") is None:
            return  # link previews resolved, a pin: the message was not edited
        before = event.cached_message
        if before is not None and before.content == message.content:
            return  # edited, but not its text (an attachment removed, embeds suppressed)
        facts = facts_of(message)
        if facts.author_id == view.user_id or facts.system:
            return
        if (facts.author_is_bot or facts.webhook_id is not None) and view.ignore_other_bots:
            return
        mentioned = view.user_id in facts.mentioned_user_ids or facts.bot_role_id is not None
        if view.mention_only and facts.place is not Place.DM and not mentioned:
            return  # without the intent its text arrives empty: not an edit to keep
        text = prompt_text(facts, view.user_id)
        await self._edits.edited(message_chat_key(facts, view), str(message.id), text)

    async def deleted(self, event: discord.RawMessageDeleteEvent, client: discord.Client) -> None:
        view = self._view()
        if view is None:
            return
        channel = client.get_channel(event.channel_id)
        keys = [chat_key(event.guild_id, event.channel_id)]
        text_channel = isinstance(channel, discord.TextChannel) or (
            channel is None and event.guild_id is not None
        )
        if view.auto_thread and text_channel:
            # Its Chat is the thread its reply opened, which has the message's id.
            keys.insert(0, chat_key(event.guild_id, event.message_id))
        for key in keys:
            if await self._edits.deleted(key, str(event.message_id)):
                return
