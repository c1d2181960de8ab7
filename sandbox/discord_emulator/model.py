"""The entities of the emulated Discord: users, guilds, channels, messages, commands, interactions.

Plain data; `world` holds and changes them, `wire` turns them into Discord's payloads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .records import InteractionRecord, RegisteredCommand, ShownMessage, ThreadInfo

Json = dict[str, Any]

TEXT_CHANNEL = 0
DM_CHANNEL = 1
CATEGORY_CHANNEL = 4
PUBLIC_THREAD = 11
PRIVATE_THREAD = 12
THREAD_TYPES = (10, PUBLIC_THREAD, PRIVATE_THREAD)

DEFAULT_MESSAGE = 0
REPLY_MESSAGE = 19
CHAT_INPUT_COMMAND_MESSAGE = 20

EPHEMERAL = 1 << 6
LOADING = 1 << 7

ADMINISTRATOR = 1 << 3
MANAGE_GUILD = 1 << 5
# Every permission bit Discord defines today (0 to 50): what an administrator or the owner has.
ALL_PERMISSIONS = (1 << 51) - 1
# What a fresh server's @everyone may do: view, send, embed, attach, history, react, external
# emojis, use application commands, create threads and talk in them.
EVERYONE_PERMISSIONS = sum(
    1 << bit for bit in (0, 6, 10, 11, 14, 15, 16, 18, 20, 21, 26, 31, 35, 36, 38)
)
# A bot's managed role as an invite with "Send Messages" + "Manage Threads" would create it.
BOT_ROLE_PERMISSIONS = EVERYONE_PERMISSIONS | (1 << 13) | (1 << 34)


@dataclass
class Application:
    id: int
    name: str
    bot_user_id: int
    verify_key: str
    # The portal toggles: an IDENTIFY asking for a privileged intent not granted here gets 4014.
    message_content_intent: bool = True
    members_intent: bool = False
    presences_intent: bool = False


@dataclass
class User:
    id: int
    username: str
    bot: bool = False
    webhook: bool = False  # a webhook's pseudo-author: never a guild member


@dataclass
class Role:
    id: int
    name: str
    permissions: int
    position: int
    managed: bool = False
    tags: Json | None = None


@dataclass
class Guild:
    id: int
    name: str
    owner_id: int
    bot_role_id: int
    joined_at: str
    channel_ids: list[int] = field(default_factory=list)
    # Every role, @everyone (whose id is the guild's) and the bot's managed role included.
    roles: dict[int, Role] = field(default_factory=dict)
    # user id -> the ids of the roles given to them (never @everyone, as in Discord's payloads)
    member_roles: dict[int, list[int]] = field(default_factory=dict)


@dataclass
class Channel:
    id: int
    type: int
    name: str | None
    guild_id: int | None
    parent_id: int | None = None
    position: int = 0
    topic: str | None = None
    recipient_id: int | None = None  # DMs: the user on the other side of the bot
    owner_id: int | None = None  # threads
    auto_archive_duration: int = 1440
    created_at: str = ""
    starter_message_id: int | None = None
    message_count: int = 0
    last_message_id: int | None = None

    @property
    def is_thread(self) -> bool:
        return self.type in THREAD_TYPES

    def thread_info(self) -> ThreadInfo:
        return ThreadInfo(
            self.id,
            self.parent_id or 0,
            self.guild_id or 0,
            self.name or "",
            self.type,
            self.owner_id or 0,
            self.auto_archive_duration,
            self.starter_message_id,
        )


@dataclass
class StoredMessage:
    id: int
    channel_id: int
    guild_id: int | None
    author_id: int
    content: str
    type: int
    created_at: float
    flags: int = 0
    embeds: list[Json] = field(default_factory=list)
    attachments: list[Json] = field(default_factory=list)
    # Action rows of buttons, as the bot last sent them.
    components: list[Json] = field(default_factory=list)
    # emoji -> the users who reacted with it, in order.
    reactions: dict[str, list[int]] = field(default_factory=dict)
    message_reference: Json | None = None
    referenced_id: int | None = None
    replied_author_pinged: bool = False
    allowed_mentions: Json | None = None
    mentions: tuple[int, ...] = ()
    mention_roles: tuple[int, ...] = ()
    mention_everyone: bool = False
    nonce: str | int | None = None
    webhook_id: int | None = None
    application_id: int | None = None
    interaction_id: int | None = None
    edited_at: str | None = None
    edit_times: list[float] = field(default_factory=list)
    deleted: bool = False

    def shown(self) -> ShownMessage:
        return ShownMessage(
            id=self.id,
            channel_id=self.channel_id,
            author_id=self.author_id,
            content=self.content,
            type=self.type,
            flags=self.flags,
            embeds=tuple(self.embeds),
            attachments=tuple(self.attachments),
            message_reference=self.message_reference,
            allowed_mentions=self.allowed_mentions,
            mentions=self.mentions,
            mention_everyone=self.mention_everyone,
            created_at=self.created_at,
            edit_count=len(self.edit_times),
            edit_times=tuple(self.edit_times),
            webhook_id=self.webhook_id,
            interaction_id=self.interaction_id,
            components=tuple(self.components),
            reactions={emoji: tuple(users) for emoji, users in self.reactions.items()},
            edited=self.edited_at is not None,
        )

    def buttons(self) -> list[Json]:
        return [
            c for row in self.components for c in row.get("components", ()) if c.get("type") == 2
        ]


@dataclass
class Command:
    id: int
    application_id: int
    guild_id: int | None
    version: int
    payload: Json

    @property
    def name(self) -> str:
        return str(self.payload["name"])

    @property
    def type(self) -> int:
        return int(self.payload.get("type", 1))

    @property
    def default_member_permissions(self) -> int | None:
        """The permissions a member needs to see and use it (None: everyone; 0: administrators
        only). A server's admins may change who can use it in the server settings; the app only
        sets this default, and the emulator applies it."""
        value = self.payload.get("default_member_permissions")
        return None if value is None else int(value)

    @property
    def usable_in_dms(self) -> bool:
        contexts = self.payload.get("contexts")
        if contexts is not None:
            return 1 in contexts  # BOT_DM; `contexts` replaces the older dm_permission
        return bool(self.payload.get("dm_permission", True))

    def registered(self) -> RegisteredCommand:
        return RegisteredCommand(self.id, self.name, self.type, self.guild_id, dict(self.payload))


APPLICATION_COMMAND = 2
MESSAGE_COMPONENT = 3


@dataclass
class Interaction:
    """A slash command run (type 2, with `command`) or a click on a message's button (type 3,
    with `custom_id` and the `source_message_id` it was on)."""

    id: int
    token: str
    command: Command | None
    channel_id: int
    guild_id: int | None
    user_id: int
    options: list[Json]
    created_at: float
    type: int = APPLICATION_COMMAND
    custom_id: str | None = None
    component_type: int | None = None
    source_message_id: int | None = None
    response_type: int | None = None
    response: Json | None = None
    responded_at: float | None = None
    message_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)

    def record(self) -> InteractionRecord:
        return InteractionRecord(
            id=self.id,
            token=self.token,
            command=self.command.name if self.command is not None else "",
            channel_id=self.channel_id,
            user_id=self.user_id,
            options=tuple(self.options),
            created_at=self.created_at,
            response_type=self.response_type,
            response=self.response,
            responded_at=self.responded_at,
            message_id=self.message_id,
            followup_ids=tuple(self.followup_ids),
            type=self.type,
            custom_id=self.custom_id,
            source_message_id=self.source_message_id,
        )
