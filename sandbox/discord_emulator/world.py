"""The emulated Discord world: holds every entity and applies Discord's rules for changing them.

No I/O here: REST handlers and the emulator's scripting call it, then dispatch what changed.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import mentions
from .model import (
    ADMINISTRATOR,
    ALL_PERMISSIONS,
    APPLICATION_COMMAND,
    BOT_ROLE_PERMISSIONS,
    CATEGORY_CHANNEL,
    CHAT_INPUT_COMMAND_MESSAGE,
    DEFAULT_MESSAGE,
    DM_CHANNEL,
    EVERYONE_PERMISSIONS,
    MESSAGE_COMPONENT,
    PUBLIC_THREAD,
    REPLY_MESSAGE,
    TEXT_CHANNEL,
    Application,
    Channel,
    Command,
    Guild,
    Interaction,
    Json,
    Role,
    StoredMessage,
    User,
)
from .records import Change
from .snowflakes import SnowflakeGenerator, now_iso

if TYPE_CHECKING:
    from .message_forms import MessageForm

Listener = Callable[[Change], None]
# How long a create's nonce is remembered for `enforce_nonce`. Discord says only "the past few
# minutes"; retries (discord.py's own, then a bot's) come within seconds.
NONCE_WINDOW = 300.0


class World:
    """Users, guilds, channels (threads and DMs included), messages, commands, interactions."""

    def __init__(
        self,
        *,
        bot_name: str,
        message_content_intent: bool,
        clock: Callable[[], float],
        snowflakes: SnowflakeGenerator,
    ) -> None:
        self.clock = clock
        self.snowflakes = snowflakes
        bot = User(snowflakes.next(), bot_name, bot=True)
        self.users: dict[int, User] = {bot.id: bot}
        self.application = Application(
            id=snowflakes.next(),
            name=bot_name,
            bot_user_id=bot.id,
            verify_key=secrets.token_hex(32),
            message_content_intent=message_content_intent,
        )
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self._messages: dict[int, dict[int, StoredMessage]] = {}
        self._dms: dict[int, int] = {}  # user id -> DM channel id
        self.commands: dict[int, Command] = {}
        self.interactions: dict[int, Interaction] = {}
        self._interactions_by_token: dict[str, Interaction] = {}
        self._listeners: list[Listener] = []
        self.nonce_window = NONCE_WINDOW
        # (channel, author, nonce) -> (message id, created at), oldest first.
        self._nonces: OrderedDict[tuple[int, int, str], tuple[int, float]] = OrderedDict()

    @property
    def bot(self) -> User:
        return self.users[self.application.bot_user_id]

    # --- setup -------------------------------------------------------------------------------

    def add_user(self, username: str, *, bot: bool = False, webhook: bool = False) -> User:
        user = User(self.snowflakes.next(), username, bot=bot, webhook=webhook)
        self.users[user.id] = user
        return user

    def add_guild(self, name: str, *, shard: tuple[int, int] | None = None) -> Guild:
        """`shard`: (shard id, shard count) the guild's id must fall on; any shard if None."""
        guild_id = self.snowflakes.next() if shard is None else self.snowflakes.on_shard(*shard)
        guild = Guild(guild_id, name, self.snowflakes.next(), self.snowflakes.next(), now_iso())
        # @everyone's id is the guild's; the bot's managed role comes with the invite.
        guild.roles[guild.id] = Role(guild.id, "@everyone", EVERYONE_PERMISSIONS, 0)
        bot_role = Role(
            guild.bot_role_id,
            self.bot.username,
            BOT_ROLE_PERMISSIONS,
            1,
            managed=True,
            tags={"bot_id": str(self.bot.id)},
        )
        guild.roles[bot_role.id] = bot_role
        guild.member_roles[self.bot.id] = [bot_role.id]
        self.guilds[guild.id] = guild
        return guild

    def members(self, guild: Guild) -> list[User]:
        """Every user is a member of every guild, except webhook authors."""
        return [u for u in self.users.values() if not u.webhook]

    def add_role(self, guild: Guild, name: str, *, permissions: int = 0) -> Role:
        """A role of the server, above the others (it does not grant more than `permissions`:
        a member's permissions are @everyone's and their roles' together)."""
        position = max(role.position for role in guild.roles.values()) + 1
        role = Role(self.snowflakes.next(), name, permissions, position)
        guild.roles[role.id] = role
        return role

    def give_role(self, guild: Guild, user_id: int, role_id: int) -> None:
        if role_id not in guild.roles or role_id == guild.id:
            raise LookupError(f"no role {role_id} to give in guild {guild.id}")
        given = guild.member_roles.setdefault(user_id, [])
        if role_id not in given:
            given.append(role_id)

    def role_ids(self, guild: Guild, user_id: int) -> list[int]:
        """The member's roles as Discord lists them: without @everyone."""
        return list(guild.member_roles.get(user_id, ()))

    def permissions(self, guild: Guild, user_id: int) -> int:
        """The member's permissions in the guild: @everyone's and their roles' together; all of
        them for the owner and for an administrator (the emulator has no channel overwrites)."""
        if user_id == guild.owner_id:
            return ALL_PERMISSIONS
        granted = guild.roles[guild.id].permissions
        for role_id in self.role_ids(guild, user_id):
            granted |= guild.roles[role_id].permissions
        return ALL_PERMISSIONS if granted & ADMINISTRATOR else granted

    def add_category(self, guild: Guild, name: str) -> Channel:
        category = Channel(
            self.snowflakes.next(),
            CATEGORY_CHANNEL,
            name,
            guild.id,
            position=len(guild.channel_ids),
        )
        self._add_channel(category)
        guild.channel_ids.append(category.id)
        return category

    def add_text_channel(
        self,
        guild: Guild,
        name: str,
        topic: str | None = None,
        *,
        category: Channel | None = None,
    ) -> Channel:
        if category is not None and (
            category.type != CATEGORY_CHANNEL or category.guild_id != guild.id
        ):
            raise ValueError(f"channel {category.id} is not a category of guild {guild.id}")
        channel = Channel(
            self.snowflakes.next(),
            TEXT_CHANNEL,
            name,
            guild.id,
            parent_id=category.id if category is not None else None,
            position=len(guild.channel_ids),
            topic=topic,
        )
        self._add_channel(channel)
        guild.channel_ids.append(channel.id)
        return channel

    def open_dm(self, user_id: int) -> Channel:
        existing = self._dms.get(user_id)
        if existing is not None:
            return self.channels[existing]
        channel = Channel(self.snowflakes.next(), DM_CHANNEL, None, None, recipient_id=user_id)
        self._add_channel(channel)
        self._dms[user_id] = channel.id
        return channel

    def start_thread(
        self,
        parent: Channel,
        name: str,
        *,
        owner_id: int,
        starter: StoredMessage | None,
        auto_archive_duration: int = 1440,
        thread_type: int = PUBLIC_THREAD,
    ) -> Channel:
        # A thread started from a message takes the message's id, which is how Discord links them.
        thread_id = starter.id if starter is not None else self.snowflakes.next()
        thread = Channel(
            thread_id,
            thread_type,
            name,
            parent.guild_id,
            parent_id=parent.id,
            owner_id=owner_id,
            auto_archive_duration=auto_archive_duration,
            created_at=now_iso(),
            starter_message_id=starter.id if starter is not None else None,
        )
        self._add_channel(thread)
        self.notify("thread", thread.id)
        return thread

    def threads(self) -> list[Channel]:
        return [c for c in self.channels.values() if c.is_thread]

    def _add_channel(self, channel: Channel) -> None:
        self.channels[channel.id] = channel
        self._messages[channel.id] = {}

    # --- messages ----------------------------------------------------------------------------

    def message(self, channel_id: int, message_id: int) -> StoredMessage | None:
        found = self._messages.get(channel_id, {}).get(message_id)
        return None if found is None or found.deleted else found

    def messages(self, channel_id: int) -> list[StoredMessage]:
        return [m for m in self._messages.get(channel_id, {}).values() if not m.deleted]

    def find_message(self, message_id: int) -> StoredMessage | None:
        for by_id in self._messages.values():
            found = by_id.get(message_id)
            if found is not None and not found.deleted:
                return found
        return None

    def message_by_nonce(
        self, channel_id: int, author_id: int, nonce: str | int
    ) -> StoredMessage | None:
        """The message `author_id` created in the channel with `nonce` in the last
        `nonce_window` seconds, deleted ones included: what an enforced nonce returns."""
        self._forget_nonces()
        found = self._nonces.get((channel_id, author_id, str(nonce)))
        return None if found is None else self._messages[channel_id].get(found[0])

    def _forget_nonces(self) -> None:
        horizon = self.clock() - self.nonce_window
        while self._nonces:
            key, (_, created_at) = next(iter(self._nonces.items()))
            if created_at > horizon:
                break
            del self._nonces[key]

    def post_message(
        self,
        channel: Channel,
        author_id: int,
        content: str,
        *,
        embeds: list[Json] | None = None,
        attachments: list[Json] | None = None,
        components: list[Json] | None = None,
        allowed_mentions: Json | None = None,
        reply_to: StoredMessage | None = None,
        reference: Json | None = None,
        nonce: str | int | None = None,
        flags: int = 0,
        webhook_id: int | None = None,
        interaction: Interaction | None = None,
        age: float = 0.0,
    ) -> StoredMessage:
        """`age`: seconds before now the message was sent (its id and timestamp say so)."""
        message_type = DEFAULT_MESSAGE
        if interaction is not None and interaction.type == APPLICATION_COMMAND:
            message_type = CHAT_INPUT_COMMAND_MESSAGE
        elif reference is not None:
            message_type = REPLY_MESSAGE
        message = StoredMessage(
            id=self.snowflakes.backdated(age) if age > 0 else self.snowflakes.next(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author_id=author_id,
            content=content,
            type=message_type,
            created_at=self.clock() - age,
            flags=flags,
            embeds=list(embeds or []),
            attachments=list(attachments or []),
            components=list(components or []),
            message_reference=reference,
            referenced_id=reply_to.id if reply_to is not None else None,
            allowed_mentions=allowed_mentions,
            nonce=nonce,
            webhook_id=webhook_id,
            application_id=self.application.id if interaction is not None else None,
            interaction_id=interaction.id if interaction is not None else None,
        )
        if reply_to is not None and mentions.pings_replied_author(allowed_mentions):
            message.replied_author_pinged = True
        self._apply_mentions(message)
        by_id = self._messages[channel.id]
        by_id[message.id] = message
        if age > 0:  # an older message lands among the others, in the order of the ids
            self._messages[channel.id] = dict(sorted(by_id.items()))
        if nonce is not None:
            self._forget_nonces()
            # The first message with a nonce is the one a later enforced create gets back.
            entry = (message.id, message.created_at)
            self._nonces.setdefault((channel.id, author_id, str(nonce)), entry)
        channel.last_message_id = max(message.id, channel.last_message_id or 0)
        if channel.is_thread:
            channel.message_count += 1
        self.notify("posted", channel.id, message)
        return message

    def edit_message(
        self,
        message: StoredMessage,
        *,
        content: str | None = None,
        embeds: list[Json] | None = None,
        components: list[Json] | None = None,
        allowed_mentions: Json | None = None,
        flags: int | None = None,
    ) -> None:
        """Applies a PATCH; None means absent (and absent allowed_mentions re-parses everything)."""
        if content is not None:
            message.content = content
        if embeds is not None:
            message.embeds = list(embeds)
        if components is not None:
            message.components = list(components)
        if flags is not None:
            message.flags = flags
        message.allowed_mentions = allowed_mentions
        message.edited_at = now_iso()
        message.edit_times.append(self.clock())
        self._apply_mentions(message)
        self.notify("edited", message.channel_id, message)

    def edit_with_form(
        self, message: StoredMessage, form: MessageForm, *, flags: int | None = None
    ) -> None:
        """Applies a PATCH as its parsed form says: the attachments it keeps plus its uploads,
        then the rest as `edit_message`."""
        message.attachments = form.attachments_after(message.attachments)
        self.edit_message(
            message,
            content=form.content,
            embeds=form.embeds,
            components=form.components,
            allowed_mentions=form.allowed_mentions,
            flags=flags,
        )

    def resolve_embeds(self, message: StoredMessage, embeds: list[Json]) -> None:
        """Discord adding link previews: the message changes, but it is not edited (its
        `edited_timestamp` stays as it was)."""
        message.embeds = list(embeds)
        self.notify("edited", message.channel_id, message)

    def add_reaction(self, message: StoredMessage, user_id: int, emoji: str) -> bool:
        """False when the user had already reacted with that emoji (Discord sends nothing)."""
        users = message.reactions.setdefault(emoji, [])
        if user_id in users:
            return False
        users.append(user_id)
        self.notify("reacted", message.channel_id, message)
        return True

    def delete_message(self, message: StoredMessage) -> None:
        message.deleted = True
        self.notify("deleted", message.channel_id, message)

    def _apply_mentions(self, message: StoredMessage) -> None:
        replied_author = None
        if message.replied_author_pinged and message.referenced_id is not None:
            replied = self.find_message(message.referenced_id)
            replied_author = replied.author_id if replied is not None else None
        found = mentions.resolve(
            message.content,
            message.allowed_mentions,
            known_users=self.users,
            replied_author=replied_author,
        )
        message.mentions = found.users
        message.mention_roles = found.roles
        message.mention_everyone = found.everyone

    # --- change listeners --------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` on every visible change; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def notify(self, kind: str, channel_id: int, message: StoredMessage | None = None) -> None:
        if not self._listeners:
            return  # the benchmarks edit thousands of times a second: build no snapshot for nobody
        change = Change(kind, channel_id, message.shown() if message is not None else None)
        for listener in list(self._listeners):
            listener(change)

    # --- commands and interactions -----------------------------------------------------------

    def commands_for(self, guild_id: int | None) -> list[Command]:
        return [c for c in self.commands.values() if c.guild_id == guild_id]

    def overwrite_commands(self, guild_id: int | None, payloads: list[Json]) -> list[Command]:
        """Bulk overwrite: commands keep their id when name and type match, others are dropped."""
        old = {(c.name, c.type): c for c in self.commands_for(guild_id)}
        for command in old.values():
            del self.commands[command.id]
        result = []
        for payload in payloads:
            key = (str(payload["name"]), int(payload.get("type", 1)))
            previous = old.get(key)
            command_id = previous.id if previous is not None else self.snowflakes.next()
            version = self.snowflakes.next()
            command = Command(command_id, self.application.id, guild_id, version, payload)
            self.commands[command.id] = command
            result.append(command)
        return result

    def find_command(self, name: str, guild_id: int | None) -> Command | None:
        scopes = (guild_id, None) if guild_id is not None else (None,)
        for scope in scopes:
            for command in self.commands_for(scope):
                if command.name == name and command.type == 1:
                    return command
        return None

    def refusal(self, command: Command, channel: Channel, user_id: int) -> str | None:
        """Why Discord's client would not let the user run `command` there (it hides it), or None.

        A guild member needs every permission in `default_member_permissions` (an administrator
        has them all; "0" leaves the command to administrators); in a DM there is no member to
        check, only whether the command may be used in DMs at all."""
        if channel.guild_id is None:
            return None if command.usable_in_dms else f"/{command.name} is not usable in DMs"
        needed = command.default_member_permissions
        if needed is None:
            return None
        has = self.permissions(self.guilds[channel.guild_id], user_id)
        if needed == 0:
            allowed = has & ADMINISTRATOR
        else:
            allowed = has & needed == needed
        if allowed:
            return None
        return (
            f"user {user_id} lacks the permissions {needed} (default_member_permissions) "
            f"to use /{command.name}"
        )

    def new_interaction(
        self, command: Command, channel: Channel, user_id: int, options: list[Json]
    ) -> Interaction:
        interaction = Interaction(
            id=self.snowflakes.next(),
            token=f"aW50ZXJhY3Rpb24{secrets.token_urlsafe(48)}",
            command=command,
            channel_id=channel.id,
            guild_id=channel.guild_id,
            user_id=user_id,
            options=options,
            created_at=self.clock(),
        )
        self.interactions[interaction.id] = interaction
        self._interactions_by_token[interaction.token] = interaction
        return interaction

    def new_click(self, message: StoredMessage, user_id: int, button: Json) -> Interaction:
        """A user clicks one of a message's buttons: a MESSAGE_COMPONENT interaction."""
        interaction = Interaction(
            id=self.snowflakes.next(),
            token=f"aW50ZXJhY3Rpb24{secrets.token_urlsafe(48)}",
            command=None,
            channel_id=message.channel_id,
            guild_id=message.guild_id,
            user_id=user_id,
            options=[],
            created_at=self.clock(),
            type=MESSAGE_COMPONENT,
            custom_id=str(button["custom_id"]),
            component_type=int(button["type"]),
            source_message_id=message.id,
        )
        self.interactions[interaction.id] = interaction
        self._interactions_by_token[interaction.token] = interaction
        return interaction

    def interaction_by_token(self, token: str) -> Interaction | None:
        return self._interactions_by_token.get(token)
