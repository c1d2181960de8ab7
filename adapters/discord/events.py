"""Which Discord messages reach the core, and how they become its `InboundMessage` and `Origin`.

`facts_of` reads what the rules need from a discord.py `Message`; `decide` is the pure rule set
over those facts (unit-tested without a gateway); `trigger_for` chains them. Whether a message is
answered is the core's decision (`bridge.intake`): this only drops what is never answered (the
bot's own, other bots', system messages, messages with neither text nor files) and says whether
the message calls on the bot (`Origin.addressed`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

import discord

from adapters.discord.files import attachment_refs
from bridge.domain import AttachmentRef, ChatKey, InboundMessage
from bridge.policy.origin import Origin
from bridge.text import clean_text

PLATFORM = "discord"
# Everything else (joins, pins, thread starters, boosts, command responses...) is a system message.
_CONVERSATION_TYPES = (discord.MessageType.default, discord.MessageType.reply)
_USER_MENTION = re.compile(r"<@!?(\d+)>")


class Place(Enum):
    DM = "dm"
    TEXT_CHANNEL = "text_channel"  # a guild text channel, where auto_thread may open a thread
    THREAD = "thread"
    OTHER = "other"  # any other guild channel with messages (voice text chat, stage...)


@dataclass(frozen=True, slots=True)
class BotView:
    """What the rules need to know about the bot and its configuration."""

    user_id: int
    auto_thread: bool = False
    ignore_other_bots: bool = True
    # The message-content intent is missing: only mentions (and DMs) carry text.
    mention_only: bool = False


@dataclass(frozen=True, slots=True)
class MessageFacts:
    message_id: int
    guild_id: int | None
    channel_id: int
    place: Place
    author_id: int
    author_name: str
    content: str
    thread_owner_id: int | None = None
    # A thread's channel (Discord: its parent), and the category of the channel, if any.
    parent_id: int | None = None
    category_id: int | None = None
    # The author's guild roles (not @everyone), when the author is a member.
    role_ids: frozenset[int] = frozenset()
    author_is_bot: bool = False
    webhook_id: int | None = None
    system: bool = False
    mentioned_user_ids: frozenset[int] = frozenset()
    # The bot's own managed role, when the message mentions it (`@bridge-bot` often picks it).
    bot_role_id: int | None = None
    replied_to_author_id: int | None = None
    user_names: tuple[tuple[int, str], ...] = ()
    attachments: tuple[AttachmentRef, ...] = ()


@dataclass(frozen=True, slots=True)
class Trigger:
    """A message for the core: the message, where it comes from, and whether its reply (if the
    core answers it) opens a thread first."""

    inbound: InboundMessage
    origin: Origin
    open_thread: bool


def chat_key(guild_id: int | None, channel_id: int) -> ChatKey:
    """A thread is a channel of its own, so each thread (and each DM) is one Chat."""
    return ChatKey(PLATFORM, str(guild_id) if guild_id else "", str(channel_id))


def opens_thread(facts: MessageFacts, view: BotView) -> bool:
    """With auto_thread, the reply to a message in a text channel opens a thread from it."""
    return view.auto_thread and facts.place is Place.TEXT_CHANNEL


def message_chat_key(facts: MessageFacts, view: BotView) -> ChatKey:
    """The Chat a message belongs to. A thread started from a message takes that message's id,
    so with auto_thread a text channel's message is the Chat of the thread its reply opens (the
    Chat is known before the thread exists, which is only created once the event is claimed)."""
    channel_id = facts.message_id if opens_thread(facts, view) else facts.channel_id
    return chat_key(facts.guild_id, channel_id)


def decide(facts: MessageFacts, view: BotView) -> Trigger | None:
    if facts.author_id == view.user_id:
        return None
    if (facts.author_is_bot or facts.webhook_id is not None) and view.ignore_other_bots:
        return None
    if facts.system:
        return None
    mentioned = view.user_id in facts.mentioned_user_ids or facts.bot_role_id is not None
    if facts.place is Place.DM:
        addressed = True
    elif view.mention_only:
        # Without the intent other messages arrive with empty content (dropped below).
        addressed = mentioned
    elif facts.place is Place.THREAD and facts.thread_owner_id == view.user_id:
        addressed = True
    else:
        addressed = mentioned or facts.replied_to_author_id == view.user_id
    text = prompt_text(facts, view.user_id)
    if not text and not facts.attachments:
        return None
    inbound = InboundMessage(
        event_id=f"message:{facts.message_id}",
        chat_key=message_chat_key(facts, view),
        author_id=str(facts.author_id),
        text=text,
        platform_message_id=str(facts.message_id),
        author_name=facts.author_name,
        attachments=facts.attachments,
    )
    return Trigger(inbound, origin_of(facts, addressed=addressed), opens_thread(facts, view))


def origin_of(facts: MessageFacts, *, addressed: bool) -> Origin:
    """Where the policy sees the message: with auto_thread, the channel it was written in (the
    thread its reply opens is where the conversation continues)."""
    return origin_at(
        user_id=facts.author_id,
        guild_id=facts.guild_id,
        channel_id=facts.channel_id,
        parent_id=facts.parent_id,
        category_id=facts.category_id,
        role_ids=facts.role_ids,
        addressed=addressed,
    )


def origin_at(
    *,
    user_id: int,
    guild_id: int | None,
    channel_id: int,
    parent_id: int | None,
    category_id: int | None,
    role_ids: frozenset[int],
    addressed: bool = True,
) -> Origin:
    """The core's `Origin` of a message or a command: in a thread (which has a `parent_id`), the
    thread and its channel; the channel's category; no workspace in a DM."""
    return Origin(
        platform=PLATFORM,
        user=str(user_id),
        workspace=_id(guild_id),
        channel=str(parent_id if parent_id is not None else channel_id),
        thread=str(channel_id) if parent_id is not None else "",
        category=_id(category_id),
        roles=frozenset(str(role) for role in role_ids),
        is_dm=guild_id is None,
        addressed=addressed,
    )


def prompt_text(facts: MessageFacts, bot_user_id: int) -> str:
    """The text for the LLM: the bot's mention removed, other mentions as readable names."""
    names = dict(facts.user_names)

    def user(match: re.Match[str]) -> str:
        user_id = int(match.group(1))
        if user_id == bot_user_id:
            return ""
        return f"@{names[user_id]}" if user_id in names else match.group(0)

    text = _USER_MENTION.sub(user, facts.content)
    if facts.bot_role_id is not None:
        text = text.replace(f"<@&{facts.bot_role_id}>", "")
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def facts_of(message: discord.Message) -> MessageFacts:
    channel = message.channel
    place, owner = Place.OTHER, None
    if message.guild is None:
        place = Place.DM
    elif isinstance(channel, discord.Thread):
        place, owner = Place.THREAD, channel.owner_id
    elif isinstance(channel, discord.TextChannel):
        place = Place.TEXT_CHANNEL
    parent_id, category_id = place_ids(channel)
    bot_role = message.guild.self_role if message.guild is not None else None
    if bot_role is not None and bot_role not in message.role_mentions:
        bot_role = None
    return MessageFacts(
        message_id=message.id,
        guild_id=message.guild.id if message.guild is not None else None,
        channel_id=channel.id,
        place=place,
        author_id=message.author.id,
        author_name=clean_text(message.author.display_name),
        content=clean_text(message.content),  # NUL and lone surrogates stop here
        thread_owner_id=owner,
        parent_id=parent_id,
        category_id=category_id,
        role_ids=role_ids(message.author),
        author_is_bot=message.author.bot,
        webhook_id=message.webhook_id,
        system=message.type not in _CONVERSATION_TYPES,
        mentioned_user_ids=frozenset(user.id for user in message.mentions),
        bot_role_id=bot_role.id if bot_role is not None else None,
        replied_to_author_id=_replied_to_author(message),
        user_names=tuple((user.id, user.display_name) for user in message.mentions),
        attachments=attachment_refs(message),
    )


def place_ids(channel: object) -> tuple[int | None, int | None]:
    """(the thread's parent channel, the category): for a thread its parent's category, for a
    guild channel its own; None where there is none (or discord.py does not know it)."""
    if isinstance(channel, discord.Thread):
        parent = channel.parent  # None when discord.py has not cached it
        return channel.parent_id, parent.category_id if parent is not None else None
    category = getattr(channel, "category_id", None)
    return None, category if isinstance(category, int) else None


def role_ids(author: discord.User | discord.Member) -> frozenset[int]:
    """The author's roles in the guild, as Discord's member object lists them (no @everyone)."""
    if not isinstance(author, discord.Member):
        return frozenset()
    return frozenset(role.id for role in author.roles if not role.is_default())


def _replied_to_author(message: discord.Message) -> int | None:
    reference = message.reference
    if reference is None:
        return None
    replied = reference.resolved or reference.cached_message
    return replied.author.id if isinstance(replied, discord.Message) else None


def trigger_for(message: discord.Message, view: BotView) -> Trigger | None:
    return decide(facts_of(message), view)


def _id(value: int | None) -> str:
    return "" if value is None else str(value)
