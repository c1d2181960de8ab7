"""What people do to messages besides writing them: edit away embeds, delete, react, click a
button; and the attachment CDN's levers. Mixed into `DiscordEmulator`, whose state it uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .cdn import Cdn, Download
from .model import Json, StoredMessage, User

if TYPE_CHECKING:
    from .dispatches import EventFeed
    from .world import World


class PeopleActions:
    world: World
    feed: EventFeed
    cdn: Cdn

    @property
    def bot_user_id(self) -> int:
        raise NotImplementedError

    async def _caught_up(self) -> None:
        raise NotImplementedError

    def _user(self, user_id: int) -> User:
        raise NotImplementedError

    async def delete_user_message(self, channel_id: int, message_id: int) -> None:
        """Its author deletes a message: MESSAGE_DELETE (id, channel and guild only)."""
        message = self._users_message(channel_id, message_id)
        self.world.delete_message(message)
        await self._caught_up()
        await self.feed.message_deleted(message)

    async def resolve_embeds(
        self, channel_id: int, message_id: int, embeds: Sequence[Json]
    ) -> None:
        """Discord adds link previews to a message: a MESSAGE_UPDATE that is not an edit (the
        content and `edited_timestamp` stay as they were)."""
        message = self._users_message(channel_id, message_id)
        self.world.resolve_embeds(message, list(embeds))
        await self._caught_up()
        await self.feed.message_updated(message)

    async def react(
        self, channel_id: int, message_id: int, user_id: int, emoji: str = "\N{OCTAGONAL SIGN}"
    ) -> None:
        """A user adds a (Unicode) reaction to a message: MESSAGE_REACTION_ADD, to sessions with
        GUILD_MESSAGE_REACTIONS (guilds) or DIRECT_MESSAGE_REACTIONS (DMs)."""
        message = self.world.message(channel_id, message_id)
        if message is None:
            raise LookupError(f"no message {message_id} in channel {channel_id}")
        user = self._user(user_id)
        if self.world.add_reaction(message, user.id, emoji):
            await self._caught_up()
            await self.feed.reaction_added(message, user, emoji)

    async def click(self, channel_id: int, message_id: int, user_id: int, custom_id: str) -> int:
        """A user clicks a button of a message: INTERACTION_CREATE type 3 (MESSAGE_COMPONENT)
        with its custom_id; returns the interaction id. The bot must acknowledge it within 3 s.
        Raises LookupError when the message shows no enabled button with that custom_id (the
        user cannot click what is not there)."""
        message = self.world.message(channel_id, message_id)
        if message is None:
            raise LookupError(f"no message {message_id} in channel {channel_id}")
        user = self._user(user_id)
        button = next(
            (
                b
                for b in message.buttons()
                if b.get("custom_id") == custom_id and not b.get("disabled")
            ),
            None,
        )
        if button is None:
            raise LookupError(f"message {message_id} has no button {custom_id!r} to click")
        interaction = self.world.new_click(message, user.id, button)
        await self._caught_up()
        await self.feed.interaction_created(interaction)
        return interaction.id

    def _users_message(self, channel_id: int, message_id: int) -> StoredMessage:
        message = self.world.message(channel_id, message_id)
        if message is None:
            raise LookupError(f"no message {message_id} in channel {channel_id}")
        if message.author_id == self.bot_user_id:
            raise ValueError("that is the bot's message; change it through the bot")
        return message

    # --- the attachment CDN ------------------------------------------------------------------

    def expire_attachment_links(self) -> None:
        """Every attachment URL handed out so far has expired (the CDN answers 404 "This content
        is no longer available."); payloads sent from now on carry new, valid ones."""
        self.cdn.expire_links()

    @property
    def downloads(self) -> list[Download]:
        """Every request to the CDN, in order (a file never downloaded is not in it)."""
        return list(self.cdn.downloads)
