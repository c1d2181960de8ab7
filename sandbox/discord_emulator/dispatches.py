"""Turns changes in the world into gateway dispatches, with the intent each one needs.

REST handlers and the emulator's own scripting (user messages, slash commands) both go through
`EventFeed`, so a bot sees the same events whichever side caused them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from .model import DM_CHANNEL, Channel, Guild, Interaction, Json, Role, StoredMessage, User
from .wire import Wire
from .world import World

GUILDS = 1 << 0
GUILD_MEMBERS = 1 << 1
GUILD_PRESENCES = 1 << 8
GUILD_MESSAGES = 1 << 9
GUILD_MESSAGE_REACTIONS = 1 << 10
DIRECT_MESSAGES = 1 << 12
DIRECT_MESSAGE_REACTIONS = 1 << 13
MESSAGE_CONTENT = 1 << 15
KNOWN_INTENTS = (1 << 26) - 1


def encode(data: object) -> str:
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        # A lone surrogate in a user's text: JSON can carry it as an escape (as Discord's own
        # escaping would); raw, it would not survive the frame's UTF-8.
        return json.dumps(data, separators=(",", ":"))
    return text


@dataclass(frozen=True, slots=True)
class Dispatch:
    """One event, encoded once; sessions lacking `redact_unless` get `redacted` if it is set."""

    event: str
    data: str
    guild_id: int | None  # routes the event to a shard; None goes to shard 0 like DMs
    intent: int  # the intent a session needs to receive it; 0 for always
    redacted: str | None = None
    redact_unless: int = MESSAGE_CONTENT


class DispatchSink(Protocol):
    async def dispatch(self, dispatch: Dispatch) -> None: ...


def content_guarded(world: World, message: StoredMessage) -> bool:
    """Whether seeing the content needs MESSAGE_CONTENT: not in DMs, own messages or mentions."""
    bot_id = world.bot.id
    return not (
        world.channels[message.channel_id].type == DM_CHANNEL
        or message.author_id == bot_id
        or bot_id in message.mentions
    )


def guild_create(wire: Wire, guild: Guild) -> Dispatch:
    """Without GUILD_MEMBERS, Discord lists only the bot itself among the guild's members."""
    full = encode(wire.guild_create(guild, all_members=True))
    bot_only = encode(wire.guild_create(guild, all_members=False))
    return Dispatch("GUILD_CREATE", full, guild.id, GUILDS, bot_only, GUILD_MEMBERS)


class EventFeed:
    """Builds dispatches for world changes and hands them to the gateway."""

    def __init__(self, wire: Wire, sink: DispatchSink) -> None:
        self.wire = wire
        self.sink = sink
        self._creates: dict[int, Dispatch] = {}  # kept so a MESSAGE_CREATE can be replayed as sent

    def _message_intent(self, message: StoredMessage) -> int:
        return GUILD_MESSAGES if message.guild_id is not None else DIRECT_MESSAGES

    def _message_dispatch(self, event: str, message: StoredMessage) -> Dispatch:
        redacted = None
        if content_guarded(self.wire.world, message):
            redacted = encode(self.wire.message(message, redact=True))
        return Dispatch(
            event,
            encode(self.wire.message(message)),
            message.guild_id,
            self._message_intent(message),
            redacted,
        )

    async def message_created(self, message: StoredMessage) -> None:
        dispatch = self._message_dispatch("MESSAGE_CREATE", message)
        self._creates[message.id] = dispatch
        await self.sink.dispatch(dispatch)

    async def message_updated(self, message: StoredMessage) -> None:
        await self.sink.dispatch(self._message_dispatch("MESSAGE_UPDATE", message))

    async def message_deleted(self, message: StoredMessage) -> None:
        data: Json = {"id": str(message.id), "channel_id": str(message.channel_id)}
        if message.guild_id is not None:
            data["guild_id"] = str(message.guild_id)
        intent = self._message_intent(message)
        await self.sink.dispatch(Dispatch("MESSAGE_DELETE", encode(data), message.guild_id, intent))

    async def reaction_added(self, message: StoredMessage, user: User, emoji: str) -> None:
        intent = (
            GUILD_MESSAGE_REACTIONS if message.guild_id is not None else DIRECT_MESSAGE_REACTIONS
        )
        data = encode(self.wire.reaction_add(message, user, emoji))
        await self.sink.dispatch(Dispatch("MESSAGE_REACTION_ADD", data, message.guild_id, intent))

    async def replay_create(self, message_id: int) -> bool:
        dispatch = self._creates.get(message_id)
        if dispatch is None:
            return False
        await self.sink.dispatch(dispatch)
        return True

    async def thread_created(self, thread: Channel) -> None:
        data = encode(self.wire.thread(thread, newly_created=True))
        await self.sink.dispatch(Dispatch("THREAD_CREATE", data, thread.guild_id, GUILDS))

    async def thread_updated(self, thread: Channel) -> None:
        data = encode(self.wire.thread(thread))
        await self.sink.dispatch(Dispatch("THREAD_UPDATE", data, thread.guild_id, GUILDS))

    async def channel_created(self, channel: Channel) -> None:
        data = encode(self.wire.channel(channel))
        await self.sink.dispatch(Dispatch("CHANNEL_CREATE", data, channel.guild_id, GUILDS))

    async def guild_created(self, guild: Guild) -> None:
        await self.sink.dispatch(guild_create(self.wire, guild))

    async def role_created(self, guild: Guild, role: Role) -> None:
        data = encode({"guild_id": str(guild.id), "role": self.wire.role(role)})
        await self.sink.dispatch(Dispatch("GUILD_ROLE_CREATE", data, guild.id, GUILDS))

    async def member_updated(self, guild: Guild, user: User) -> None:
        """A member's roles changed: only sessions with GUILD_MEMBERS hear of it."""
        data = encode({**self.wire.member(guild, user), "guild_id": str(guild.id)})
        await self.sink.dispatch(Dispatch("GUILD_MEMBER_UPDATE", data, guild.id, GUILD_MEMBERS))

    async def interaction_created(self, interaction: Interaction) -> None:
        data = encode(self.wire.interaction(interaction))
        await self.sink.dispatch(Dispatch("INTERACTION_CREATE", data, interaction.guild_id, 0))
