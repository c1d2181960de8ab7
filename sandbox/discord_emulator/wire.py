"""Discord's JSON shapes for the emulated world, as discord.py parses them (see discord/types/).

One place builds every payload, so REST replies and gateway dispatches of an entity always match.
"""

from __future__ import annotations

from .cdn import Cdn
from .model import (
    BOT_ROLE_PERMISSIONS,
    CATEGORY_CHANNEL,
    DM_CHANNEL,
    MESSAGE_COMPONENT,
    Channel,
    Command,
    Guild,
    Interaction,
    Json,
    Role,
    StoredMessage,
    User,
)
from .snowflakes import snowflake_iso
from .world import World

ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024
# GATEWAY_MESSAGE_CONTENT_LIMITED: the toggle of an app in fewer than 100 servers.
APP_FLAG_MESSAGE_CONTENT_LIMITED = 1 << 19
APP_FLAG_GUILD_MEMBERS_LIMITED = 1 << 15


class Wire:
    """Builds payloads from a `World`; attachment URLs are signed by the `Cdn` as they go out."""

    def __init__(self, world: World, cdn: Cdn | None = None) -> None:
        self.world = world
        self.cdn = cdn or Cdn()

    def user(self, user: User) -> Json:
        payload: Json = {
            "id": str(user.id),
            "username": user.username,
            "discriminator": "0000" if user.webhook else "0",
            "global_name": None if user.bot else user.username,
            "avatar": None,
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
            "primary_guild": None,
            "collectibles": None,
        }
        if user.bot:
            payload["bot"] = True
        return payload

    def current_user(self) -> Json:
        extra = {"verified": True, "mfa_enabled": False, "email": None, "locale": "en-US"}
        return {**self.user(self.world.bot), **extra}

    def member(self, guild: Guild, user: User, *, with_user: bool = True) -> Json:
        payload: Json = {
            "roles": [str(role_id) for role_id in self.world.role_ids(guild, user.id)],
            "joined_at": guild.joined_at,
            "deaf": False,
            "mute": False,
            "flags": 0,  # discord.py reads this key unconditionally
            "pending": False,
            "nick": None,
            "avatar": None,
            "banner": None,
            "premium_since": None,
            "communication_disabled_until": None,
        }
        if with_user:
            payload["user"] = self.user(user)
        return payload

    def roles(self, guild: Guild) -> list[Json]:
        return [self.role(role) for role in guild.roles.values()]

    def role(self, role: Role) -> Json:
        payload: Json = {
            "id": str(role.id),
            "name": role.name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "position": role.position,
            "permissions": str(role.permissions),
            "managed": role.managed,
            "mentionable": False,
            "flags": 0,
            "icon": None,
            "unicode_emoji": None,
        }
        if role.tags is not None:
            payload["tags"] = role.tags
        return payload

    def channel(self, channel: Channel) -> Json:
        if channel.type == DM_CHANNEL:
            recipient = self.world.users[channel.recipient_id or 0]
            return {
                "id": str(channel.id),
                "type": DM_CHANNEL,
                "flags": 0,
                "last_message_id": _opt_id(channel.last_message_id),
                "recipients": [self.user(recipient)],
            }
        if channel.is_thread:
            return self.thread(channel)
        if channel.type == CATEGORY_CHANNEL:
            return {
                "id": str(channel.id),
                "type": CATEGORY_CHANNEL,
                "guild_id": str(channel.guild_id),
                "name": channel.name,
                "position": channel.position,
                "permission_overwrites": [],
                "parent_id": None,
                "nsfw": False,
                "flags": 0,
            }
        return {
            "id": str(channel.id),
            "type": channel.type,
            "guild_id": str(channel.guild_id),
            "name": channel.name,
            "position": channel.position,
            "permission_overwrites": [],
            # The category it is in, if any (a thread's parent_id is its channel).
            "parent_id": _opt_id(channel.parent_id),
            "topic": channel.topic,
            "nsfw": False,
            "flags": 0,
            "last_message_id": _opt_id(channel.last_message_id),
            "rate_limit_per_user": 0,
            "default_auto_archive_duration": 1440,
            "default_thread_rate_limit_per_user": 0,
        }

    def thread(self, thread: Channel, *, newly_created: bool = False) -> Json:
        payload: Json = {
            "id": str(thread.id),
            "type": thread.type,
            "guild_id": str(thread.guild_id),
            "parent_id": str(thread.parent_id),
            "owner_id": str(thread.owner_id),
            "name": thread.name,
            "last_message_id": _opt_id(thread.last_message_id),
            "rate_limit_per_user": 0,
            "message_count": thread.message_count,
            "total_message_sent": thread.message_count,
            "member_count": 1,
            "flags": 0,
            "applied_tags": [],
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": thread.auto_archive_duration,
                "archive_timestamp": thread.created_at,
                "locked": False,
                "create_timestamp": thread.created_at,
                "invitable": True,
            },
        }
        if thread.owner_id == self.world.bot.id:
            payload["member"] = {
                "id": str(thread.id),
                "user_id": str(self.world.bot.id),
                "join_timestamp": thread.created_at,
                "flags": 1,
            }
        if newly_created:
            payload["newly_created"] = True
        return payload

    def guild_create(self, guild: Guild, *, all_members: bool) -> Json:
        members = self.world.members(guild)
        listed = members if all_members else [self.world.bot]
        channels = [self.world.channels[c] for c in guild.channel_ids]
        threads = [t for t in self.world.threads() if t.guild_id == guild.id]
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(guild.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "features": [],
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "application_id": None,
            "max_members": 500000,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "roles": self.roles(guild),
            "emojis": [],
            "stickers": [],
            "joined_at": guild.joined_at,
            "large": False,
            "unavailable": False,
            "lazy": True,
            "member_count": len(members),
            "members": [self.member(guild, u) for u in listed],
            "channels": [self.channel(c) for c in channels],
            "threads": [self.thread(t) for t in threads],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "embedded_activities": [],
            "activity_instances": [],
        }

    def message(
        self,
        message: StoredMessage,
        *,
        redact: bool = False,
        nested: bool = False,
        members: bool = True,
    ) -> Json:
        """A message object; `redact` empties what the MESSAGE_CONTENT intent guards. `members`:
        with the author's and the mentioned users' `member` objects, which Discord sends only in
        MESSAGE_CREATE and MESSAGE_UPDATE (a message read over REST has none)."""
        author = self.world.users[message.author_id]
        guild = self.world.guilds.get(message.guild_id) if message.guild_id else None
        payload: Json = {
            "id": str(message.id),
            "channel_id": str(message.channel_id),
            "type": message.type,
            "author": self.user(author),
            "content": "" if redact else message.content,
            "timestamp": snowflake_iso(message.id),
            "edited_timestamp": message.edited_at,
            "tts": False,
            "pinned": False,
            "flags": message.flags,
            "mention_everyone": message.mention_everyone,
            "mentions": [
                self._mentioned(guild if members else None, uid) for uid in message.mentions
            ],
            "mention_roles": [str(r) for r in message.mention_roles],
            "attachments": [] if redact else self._attachments(message),
            "embeds": [] if redact else list(message.embeds),
            "components": [] if redact else list(message.components),
        }
        if message.reactions:
            payload["reactions"] = [
                self._reaction(emoji, users) for emoji, users in message.reactions.items()
            ]
        if guild is not None:
            payload["guild_id"] = str(guild.id)
            if members and not author.webhook:
                payload["member"] = self.member(guild, author, with_user=False)
        if message.nonce is not None:
            payload["nonce"] = message.nonce
        if message.webhook_id is not None:
            payload["webhook_id"] = str(message.webhook_id)
        if message.application_id is not None:
            payload["application_id"] = str(message.application_id)
        if message.interaction_id is not None:
            interaction = self.world.interactions[message.interaction_id]
            payload["interaction_metadata"] = self._interaction_metadata(interaction)
        channel = self.world.channels[message.channel_id]
        if channel.is_thread:
            payload["position"] = max(channel.message_count - 1, 0)
        if message.message_reference is not None:
            payload["message_reference"] = message.message_reference
            if not nested:
                referenced = self.world.find_message(message.referenced_id or 0)
                # Discord nests one level only, and sends null for a deleted referenced message.
                payload["referenced_message"] = (
                    self.message(referenced, redact=redact, nested=True, members=members)
                    if referenced
                    else None
                )
        return payload

    def _attachments(self, message: StoredMessage) -> list[Json]:
        """As Discord does, every payload signs the files' URLs anew (a day from now)."""
        shown = []
        for attachment in message.attachments:
            file_id = int(attachment["id"])
            if file_id in self.cdn.files:
                attachment = {**attachment, **self.cdn.signed(file_id)}
            shown.append(attachment)
        return shown

    def _reaction(self, emoji: str, users: list[int]) -> Json:
        bot = self.world.bot.id
        return {
            "emoji": {"id": None, "name": emoji},
            "count": len(users),
            "count_details": {"burst": 0, "normal": len(users)},
            "burst_colors": [],
            "me": bot in users,
            "me_burst": False,
            "burst_me": False,
            "burst_count": 0,
        }

    def reaction_add(self, message: StoredMessage, user: User, emoji: str) -> Json:
        """MESSAGE_REACTION_ADD: who reacted to which message, with the member in a guild."""
        payload: Json = {
            "user_id": str(user.id),
            "channel_id": str(message.channel_id),
            "message_id": str(message.id),
            "message_author_id": str(message.author_id),
            "emoji": {"id": None, "name": emoji},
            "burst": False,
            "burst_colors": [],
            "type": 0,  # normal (1: a super reaction)
        }
        if message.guild_id is not None:
            guild = self.world.guilds[message.guild_id]
            payload["guild_id"] = str(guild.id)
            payload["member"] = self.member(guild, user)
        return payload

    def _mentioned(self, guild: Guild | None, user_id: int) -> Json:
        user = self.world.users[user_id]
        payload = self.user(user)
        if guild is not None and not user.webhook:
            payload["member"] = self.member(guild, user, with_user=False)
        return payload

    def _interaction_metadata(self, interaction: Interaction) -> Json:
        metadata: Json = {
            "id": str(interaction.id),
            "type": interaction.type,
            "user": self.user(self.world.users[interaction.user_id]),
            "authorizing_integration_owners": self._owners(interaction),
        }
        if interaction.command is not None:
            metadata["name"] = interaction.command.name
            metadata["command_type"] = interaction.command.type
        if interaction.source_message_id is not None:
            metadata["interacted_message_id"] = str(interaction.source_message_id)
        return metadata

    def _owners(self, interaction: Interaction) -> Json:
        if interaction.guild_id is not None:
            return {"0": str(interaction.guild_id)}
        return {"1": str(interaction.user_id)}

    def interaction(self, interaction: Interaction) -> Json:
        channel = self.world.channels[interaction.channel_id]
        user = self.world.users[interaction.user_id]
        command = interaction.command
        data: Json
        if command is not None:
            data = {
                "id": str(command.id),
                "name": command.name,
                "type": command.type,
                "options": interaction.options,
            }
        else:
            data = {
                "custom_id": interaction.custom_id,
                "component_type": interaction.component_type,
            }
        payload: Json = {
            "id": str(interaction.id),
            "application_id": str(self.world.application.id),
            "type": interaction.type,
            "data": data,
            "token": interaction.token,
            "version": 1,
            "channel_id": str(channel.id),
            "channel": self.channel(channel),
            "app_permissions": str(BOT_ROLE_PERMISSIONS),
            "locale": "en-US",
            "entitlements": [],
            "entitlement_sku_ids": [],
            "authorizing_integration_owners": self._owners(interaction),
            "context": 0 if interaction.guild_id is not None else 1,
            "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
        }
        if interaction.type == MESSAGE_COMPONENT:
            # The message whose button was clicked, as it shows now.
            source = self.world.find_message(interaction.source_message_id or 0)
            if source is not None:
                payload["message"] = self.message(source, members=False)
        if interaction.guild_id is not None:
            guild = self.world.guilds[interaction.guild_id]
            if command is not None and command.guild_id is not None:
                data["guild_id"] = str(command.guild_id)
            payload["guild_id"] = str(guild.id)
            payload["guild"] = {"id": str(guild.id), "locale": "en-US", "features": []}
            payload["guild_locale"] = "en-US"
            # The invoker's permissions in the channel, overwrites included (there are none here).
            permissions = str(self.world.permissions(guild, user.id))
            payload["channel"]["permissions"] = permissions
            payload["member"] = {**self.member(guild, user), "permissions": permissions}
        else:
            payload["user"] = self.user(user)
        return payload

    def command(self, command: Command) -> Json:
        needed = command.default_member_permissions
        payload: Json = {
            "type": 1,
            "description": "",
            "options": [],
            "nsfw": False,
            "dm_permission": True,
            "contexts": None,
            "integration_types": [0],
            **command.payload,
            # Discord answers with a string whatever number type the app sent.
            "default_member_permissions": None if needed is None else str(needed),
            "id": str(command.id),
            "application_id": str(command.application_id),
            "version": str(command.version),
        }
        if command.guild_id is not None:
            payload["guild_id"] = str(command.guild_id)
        return payload

    def application(self) -> Json:
        app = self.world.application
        flags = APP_FLAG_MESSAGE_CONTENT_LIMITED if app.message_content_intent else 0
        if app.members_intent:
            flags |= APP_FLAG_GUILD_MEMBERS_LIMITED
        return {
            "id": str(app.id),
            "name": app.name,
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": app.verify_key,
            "flags": flags,
            "hook": True,
            "tags": [],
            "owner": self.user(self.world.bot),
            "team": None,
            "bot": self.user(self.world.bot),
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "approximate_guild_count": len(self.world.guilds),
            "integration_types_config": {"0": {}},
        }


def _opt_id(value: int | None) -> str | None:
    return None if value is None else str(value)
