"""Slack events into the core's `InboundMessage`: pure functions that decide what may be answered.

Malformed or hostile payloads are dropped here with a log line; no raw payload travels further.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters.slack.files import files_to_look_up, parse_files
from bridge.domain import ChatKey, InboundMessage
from bridge.policy.origin import Origin
from bridge.text import clean_text

log = logging.getLogger(__name__)

PLATFORM = "slack"
MAX_TEXT_CHARS = 40_000  # Slack truncates longer messages; anything bigger is not from Slack
# What a slash command's text holds at most (Slack's message box; the prompt is the longest use).
MAX_COMMAND_CHARS = 8_000

# Subtypes that carry text a person wrote; everything else (edits, deletions, joins, topic
# changes, the assistant thread's own root...) is not a message to answer.
USER_TEXT_SUBTYPES = frozenset({None, "thread_broadcast", "file_share", "me_message"})

_EVENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
_TEAM = re.compile(r"^[TE][A-Z0-9]{1,30}\Z")
_CHANNEL = re.compile(r"^[CDG][A-Z0-9]{1,30}\Z")
_USER = re.compile(r"^[UW][A-Z0-9]{1,30}\Z")
_BOT = re.compile(r"^B[A-Z0-9]{1,30}\Z")
_TS = re.compile(r"^[0-9]{1,12}\.[0-9]{1,9}\Z")


@dataclass(frozen=True, slots=True)
class BotIdentity:
    """Who the app is in its workspace (from auth.test)."""

    user_id: str
    bot_id: str
    team_id: str


@dataclass(frozen=True, slots=True)
class SlackMessage:
    """A message the bot may answer, with the facts the adapter routes on."""

    inbound: InboundMessage
    team: str
    channel: str
    ts: str
    thread_ts: str  # the root of the thread the reply goes in; == ts when it starts one
    is_dm: bool
    mentions_bot: bool
    recipient_team: str  # the author's workspace (differs in Slack Connect channels)
    # Files announced by id only (Slack Connect): files.info completes them before routing.
    files_to_look_up: tuple[str, ...] = ()

    @property
    def in_existing_thread(self) -> bool:
        return self.thread_ts != self.ts

    @property
    def reply_place(self) -> ReplyPlace:
        return ReplyPlace(
            team=self.team,
            channel=self.channel,
            thread_ts=self.thread_ts,
            recipient_user=self.inbound.author_id,
            recipient_team=self.recipient_team,
            is_dm=self.is_dm,
            existing_thread=self.in_existing_thread,
        )


@dataclass(frozen=True, slots=True)
class ReplyPlace:
    """Where a reply goes, and whom Slack streams it to."""

    team: str
    channel: str
    thread_ts: str
    recipient_user: str
    recipient_team: str
    is_dm: bool
    # The message replied to was in a thread already (not one the reply starts).
    existing_thread: bool = True

    def __str__(self) -> str:
        return f"{self.channel}/{self.thread_ts}"  # for log lines and error messages


def parse_message(
    body: Mapping[str, Any], bot: BotIdentity, *, ignore_other_bots: bool
) -> SlackMessage | None:
    """An `app_mention` or `message` event_callback as a SlackMessage, or None to ignore it."""
    try:
        return _parse_message(body, bot, ignore_other_bots)
    except _Skip as skip:
        skip.log(body)
        return None


@dataclass(frozen=True, slots=True)
class CommandCall:
    """`/chat-bridge <name> [argument]` as the core's admin commands take it."""

    origin: Origin
    name: str
    argument: str


def parse_command(body: Mapping[str, Any]) -> CommandCall | None:
    """A slash command's payload as a CommandCall, or None to ignore it. No name runs `help`.

    App commands cannot be run in threads, so the origin is the channel (or DM) itself.
    """
    try:
        team = _field(body, "team_id", _TEAM)
        channel = _field(body, "channel_id", _CHANNEL)
        user = _field(body, "user_id", _USER)
        text = body.get("text", "")
        if not isinstance(text, str) or len(text) > MAX_COMMAND_CHARS:
            raise _Skip("command text missing or too long", malformed=True)
    except _Skip as skip:
        skip.log(body)
        return None
    # Slack escapes &, < and > in the text; with should_escape false nothing else is encoded.
    text = unescape(clean_text(text)).strip()
    name, argument = (text.split(maxsplit=1) + ["", ""])[:2]
    is_dm = channel.startswith("D") or body.get("channel_name") == "directmessage"
    origin = Origin(PLATFORM, user, workspace=team, channel=channel, is_dm=is_dm, addressed=True)
    return CommandCall(origin, name.lower() or "help", argument.strip())


def parse_assistant_thread(body: Mapping[str, Any]) -> ChatKey | None:
    """The chat of an `assistant_thread_started` event (the user opened the AI-app pane)."""
    event = body.get("event")
    thread = event.get("assistant_thread") if isinstance(event, Mapping) else None
    try:
        if not isinstance(thread, Mapping):
            raise _Skip("assistant_thread missing", malformed=True)
        team = _field(body, "team_id", _TEAM)
        return ChatKey(
            PLATFORM, team, _field(thread, "channel_id", _CHANNEL), _field(thread, "thread_ts", _TS)
        )
    except _Skip as skip:
        skip.log(body)
        return None


def _parse_message(
    body: Mapping[str, Any], bot: BotIdentity, ignore_other_bots: bool
) -> SlackMessage:
    event = body.get("event")
    if not isinstance(event, Mapping) or event.get("type") not in ("message", "app_mention"):
        raise _Skip("not a message event", malformed=True)
    subtype = event.get("subtype")
    if event.get("hidden") or not (
        subtype in USER_TEXT_SUBTYPES or (subtype == "bot_message" and not ignore_other_bots)
    ):
        raise _Skip(f"subtype {str(subtype)[:40]!r}")
    user, bot_id = event.get("user"), event.get("bot_id")
    if user == bot.user_id or (bot_id is not None and bot_id == bot.bot_id):
        raise _Skip("own message")
    if (bot_id is not None or subtype == "bot_message") and ignore_other_bots:
        raise _Skip("another bot")
    event_id = _field(body, "event_id", _EVENT_ID)
    team = _field(body, "team_id", _TEAM)
    channel = _field(event, "channel", _CHANNEL)
    ts = _field(event, "ts", _TS)
    thread_ts = _field(event, "thread_ts", _TS) if "thread_ts" in event else ts
    author = user if user is not None else bot_id
    if not isinstance(author, str) or not (_USER.match(author) or _BOT.match(author)):
        raise _Skip("bad author", malformed=True)
    # A file shared without a comment comes with an empty text (or none at all).
    text = event.get("text", "" if "files" in event else None)
    if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
        raise _Skip("text missing or too long", malformed=True)
    text = clean_text(text)  # NUL and lone surrogates stop here
    files = parse_files(event, f"{channel}/{ts}")
    look_up = files_to_look_up(event)
    if not text.strip() and not files and not look_up:
        raise _Skip("no text")
    channel_type = event.get("channel_type")
    is_dm = channel_type == "im" or (channel_type is None and channel.startswith("D"))
    user_team = event.get("user_team") or event.get("team")
    return SlackMessage(
        inbound=InboundMessage(
            event_id=event_id,
            chat_key=ChatKey(PLATFORM, team, channel, thread_ts),
            author_id=author,
            text=prompt_text(text, bot.user_id),
            platform_message_id=ts,
            attachments=files,
        ),
        team=team,
        channel=channel,
        ts=ts,
        thread_ts=thread_ts,
        is_dm=is_dm,
        mentions_bot=event["type"] == "app_mention" or mentions(text, bot.user_id),
        recipient_team=user_team if isinstance(user_team, str) and _TEAM.match(user_team) else team,
        files_to_look_up=look_up,
    )


def mentions(text: str, user_id: str) -> bool:
    return f"<@{user_id}>" in text or f"<@{user_id}|" in text


def prompt_text(text: str, bot_user_id: str) -> str:
    """What the model reads: the bot's own mention removed, Slack's three escapes undone."""
    cleaned = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", "", text).strip()
    if not cleaned:
        cleaned = text.strip()  # a bare mention: let the model see that it was called
    return unescape(cleaned)


def unescape(text: str) -> str:
    """Slack's three escapes undone (it sends every text with &, < and > escaped)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def valid_team(value: Any) -> bool:
    return isinstance(value, str) and bool(_TEAM.match(value))


def valid_channel(value: Any) -> bool:
    return isinstance(value, str) and bool(_CHANNEL.match(value))


def valid_ts(value: Any) -> bool:
    return isinstance(value, str) and bool(_TS.match(value))


def ts_order(ts: str) -> tuple[int, int]:
    """Slack timestamps sort as numbers; floats would lose the microseconds."""
    seconds, _, micros = ts.partition(".")
    return int(seconds), int(micros.ljust(6, "0")[:6] or 0)


def _field(source: Mapping[str, Any], name: str, shape: re.Pattern[str]) -> str:
    value = source.get(name)
    if not isinstance(value, str) or not shape.match(value):
        raise _Skip(f"bad {name}", malformed=True)
    return value


class _Skip(Exception):
    """Why an event is not answered; `malformed` ones are worth a warning, the rest are routine."""

    def __init__(self, reason: str, *, malformed: bool = False) -> None:
        super().__init__(reason)
        self.malformed = malformed

    def log(self, body: Mapping[str, Any]) -> None:
        event = body.get("event")
        channel = event.get("channel") if isinstance(event, Mapping) else None
        ts = event.get("ts") if isinstance(event, Mapping) else None
        # Only short reprs of ids: a hostile payload must not flood or forge log lines.
        where = (repr(str(channel))[:40], repr(str(ts))[:40])
        if self.malformed:
            log.warning("slack: dropping malformed event in %s at %s: %s", *where, self)
        else:
            log.debug("slack: not answering message in %s at %s: %s", *where, self)
