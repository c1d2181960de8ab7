"""The emulated workspace's state: users, channels, messages, threads and assistant-thread metadata.

Web API handlers and the event generators change it; tests and the sandbox read it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.slack_emulator.mentions import mentions_in

_CONVERSATION_ID = re.compile(r"^[CDG][A-Z0-9]+$")


def is_conversation_id(value: str) -> bool:
    """Public channels start with C, DMs with D, private channels and group DMs with G."""
    return bool(_CONVERSATION_ID.match(value))


def channel_type_of(channel: str) -> str:
    """The `channel_type` Slack puts in message events, guessed from the id prefix."""
    return {"D": "im", "G": "group"}.get(channel[:1], "channel")


@dataclass(frozen=True, slots=True)
class AppIdentity:
    """The one installed app the emulator serves, with its tokens and ids."""

    bot_token: str
    app_token: str
    signing_secret: str
    team_id: str
    team_name: str
    team_domain: str
    bot_user_id: str
    bot_id: str
    app_id: str
    bot_name: str

    def bot_profile(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "app_id": self.app_id,
            "name": self.bot_name,
            "icons": {"image_36": "https://a.slack-edge.com/80588/img/plugins/app/bot_36.png"},
            "deleted": False,
            "updated": 1700000000,
            "team_id": self.team_id,
        }


@dataclass(slots=True)
class User:
    id: str
    name: str
    team_id: str
    is_bot: bool = False
    real_name: str = ""
    bot_id: str | None = None

    def to_api(self) -> dict[str, Any]:
        real_name = self.real_name or self.name
        profile: dict[str, Any] = {
            "real_name": real_name,
            "display_name": self.name,
            "real_name_normalized": real_name,
            "display_name_normalized": self.name,
            "team": self.team_id,
        }
        if self.bot_id:
            profile["bot_id"] = self.bot_id
        return {
            "id": self.id,
            "team_id": self.team_id,
            "name": self.name,
            "deleted": False,
            "real_name": real_name,
            "tz": "Etc/UTC",
            "tz_label": "Coordinated Universal Time",
            "tz_offset": 0,
            "profile": profile,
            "is_admin": False,
            "is_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": self.is_bot,
            "is_app_user": False,
            "updated": 1700000000,
        }


@dataclass(slots=True)
class Message:
    ts: str
    channel: str
    text: str = ""
    user: str | None = None
    bot_id: str | None = None
    app_id: str | None = None
    bot_profile: dict[str, Any] | None = None
    username: str | None = None
    subtype: str | None = None
    blocks: list[dict[str, Any]] | None = None
    thread_ts: str | None = None
    parent_user_id: str | None = None
    client_msg_id: str | None = None
    team: str | None = None
    metadata: dict[str, Any] | None = None
    # Files shared with the message (subtype file_share): Slack's file objects.
    files: list[dict[str, Any]] | None = None
    # Legacy attachments, e.g. the link previews Slack adds when it unfurls a link.
    attachments: list[dict[str, Any]] | None = None
    # Emoji reactions: {"name": ..., "users": [...], "count": n}, in the order added.
    reactions: list[dict[str, Any]] = field(default_factory=list)
    edits: int = 0
    edited: dict[str, str] | None = None
    streaming: bool = False
    streamed: bool = False  # posted with chat.startStream: text above, stop blocks below
    stream_deadline: float = 0.0
    chunks: list[dict[str, Any]] = field(default_factory=list)
    # "markdown_text" or "chunks": the form of the stream's first content (Slack then refuses
    # the other form with streaming_mode_mismatch).
    stream_mode: str | None = None
    # Task cards (task_update chunks): the latest state of each id, in first-seen order, and
    # where in `text` each first showed (timeline mode interleaves them with the text).
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    task_offsets: dict[str, int] = field(default_factory=dict)
    # Everyone any version of the message pinged (Slack notifies for mentions an edit adds, and
    # cannot take back a notification an edit removes).
    notified: list[str] = field(default_factory=list)

    @property
    def author(self) -> str:
        return self.user or self.bot_id or ""

    def record_mentions(self) -> None:
        """Add who the message as it reads now notifies (see `mentions.mentions_in`)."""
        for target in mentions_in(self.text, self.blocks):
            if target not in self.notified:
                self.notified.append(target)

    def to_api(self) -> dict[str, Any]:
        """The message object as the Web API and message events show it."""
        data: dict[str, Any] = {"type": "message"}
        if self.subtype:
            data["subtype"] = self.subtype
        data["text"] = self.text
        if self.files is not None:
            data.update(files=self.files, upload=False, display_as_bot=False)
        for key in ("user", "bot_id", "app_id", "username", "client_msg_id", "team"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        data["ts"] = self.ts
        if self.attachments:
            data["attachments"] = self.attachments
        if self.blocks is not None:
            data["blocks"] = self.blocks
        if self.bot_profile is not None:
            data["bot_profile"] = self.bot_profile
        if self.thread_ts is not None:
            data["thread_ts"] = self.thread_ts
            if self.thread_ts != self.ts and self.parent_user_id:
                data["parent_user_id"] = self.parent_user_id
        if self.edited is not None:
            data["edited"] = dict(self.edited)
        if self.metadata is not None:
            data["metadata"] = self.metadata
        if self.reactions:
            data["reactions"] = [dict(r, users=list(r["users"])) for r in self.reactions]
        return data


@dataclass(frozen=True, slots=True)
class Ephemeral:
    """A message only `user` sees, in `channel` (chat.postEphemeral, a slash command's answer).

    Slack keeps it only in that user's open client: it has no history, no edits, no events.
    """

    ts: str
    channel: str
    user: str  # who sees it
    text: str
    blocks: list[dict[str, Any]] | None
    rendered: str  # what the user reads: blocks when present, otherwise `text`
    thread_ts: str | None = None
    # "chat.postEphemeral", "command_ack" (the app's acknowledgement of a slash command),
    # "response_url", or "slack" (an error Slack itself shows, such as a command's timeout).
    source: str = "chat.postEphemeral"
    author: str = ""  # the app's bot user, or USLACKBOT for Slack's own notices
    # Slack shows an ephemeral message in a thread only if the thread has replies already;
    # one sent to a message without replies is accepted and shown nowhere.
    visible: bool = True


@dataclass(slots=True)
class Channel:
    id: str
    messages: dict[str, Message] = field(default_factory=dict)
    top_level: list[str] = field(default_factory=list)
    replies: dict[str, list[str]] = field(default_factory=dict)
    # People known to be in the conversation: whoever posted or ran a command in it, or joined.
    members: set[str] = field(default_factory=set)


@dataclass(slots=True)
class ThreadStatus:
    text: str
    loading_messages: list[str]
    set_at: float


@dataclass(frozen=True, slots=True)
class Change:
    """One visible change, passed to listeners (the sandbox prints these)."""

    kind: str  # "posted", "updated", "deleted", "status", "title", "prompts", "ephemeral"
    channel: str
    ts: str | None
    message: Message | None = None


class Workspace:
    """Every channel's messages plus per-thread assistant state. Single event loop, no locking."""

    def __init__(
        self,
        team_id: str,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.team_id = team_id
        self.clock = clock
        self._wall_clock = wall_clock
        self._last_ts_us = 0
        self.channels: dict[str, Channel] = {}
        self.users: dict[str, User] = {}
        self.statuses: dict[tuple[str, str], ThreadStatus] = {}
        self.titles: dict[tuple[str, str], str] = {}
        self.suggested_prompts: dict[tuple[str, str | None], dict[str, Any]] = {}
        self.ephemerals: list[Ephemeral] = []
        self.status_ttl = 120.0
        self.app_user_id: str | None = None  # the emulated app's bot user
        self._listeners: list[Callable[[Change], None]] = []

    # ---- identifiers -------------------------------------------------------------------------

    def next_ts(self) -> str:
        """Message timestamps are unique in the workspace and strictly increasing, like Slack's."""
        now_us = int(self._wall_clock() * 1_000_000)
        self._last_ts_us = max(now_us, self._last_ts_us + 1)
        seconds, micros = divmod(self._last_ts_us, 1_000_000)
        return f"{seconds}.{micros:06d}"

    # ---- messages ------------------------------------------------------------------------------

    def channel(self, channel_id: str) -> Channel:
        found = self.channels.get(channel_id)
        if found is None:
            found = self.channels[channel_id] = Channel(channel_id)
        return found

    def find(self, channel_id: str, ts: str) -> Message | None:
        found = self.channels.get(channel_id)
        return found.messages.get(ts) if found else None

    def add(self, message: Message) -> Message:
        chan = self.channel(message.channel)
        chan.messages[message.ts] = message
        if message.user is not None:
            chan.members.add(message.user)
        root_ts = message.thread_ts
        if root_ts is None or root_ts == message.ts:
            chan.top_level.append(message.ts)
        else:
            root = chan.messages.get(root_ts)
            if root is not None:
                root.thread_ts = root_ts
                message.parent_user_id = message.parent_user_id or root.author
            chan.replies.setdefault(root_ts, []).append(message.ts)
            if message.user is not None and message.user == self.app_user_id:
                # Slack clears the "is thinking..." status as soon as the app replies in the thread.
                self.statuses.pop((message.channel, root_ts), None)
        self.notify(Change("posted", message.channel, message.ts, message))
        return message

    def remove(self, channel_id: str, ts: str) -> Message | None:
        chan = self.channels.get(channel_id)
        message = chan.messages.get(ts) if chan else None
        if chan is None or message is None:
            return None
        replies = chan.replies.get(ts)
        if replies:
            # A deleted thread root with replies stays as a tombstone, as in Slack.
            chan.messages[ts] = Message(
                ts=ts,
                channel=channel_id,
                text="This message was deleted.",
                subtype="tombstone",
                user="USLACKBOT",
                thread_ts=ts,
            )
        else:
            del chan.messages[ts]
            if message.thread_ts in (None, ts):
                chan.top_level.remove(ts)
            else:
                siblings = chan.replies.get(message.thread_ts or "", [])
                if ts in siblings:
                    siblings.remove(ts)
        self.notify(Change("deleted", channel_id, ts, message))
        return message

    def thread(self, channel_id: str, thread_ts: str) -> list[Message]:
        chan = self.channels.get(channel_id)
        if chan is None:
            return []
        root = chan.messages.get(thread_ts)
        replies = [
            chan.messages[ts] for ts in chan.replies.get(thread_ts, ()) if ts in chan.messages
        ]
        return ([root] if root else []) + replies

    def top_level(self, channel_id: str) -> list[Message]:
        chan = self.channels.get(channel_id)
        return [chan.messages[ts] for ts in chan.top_level] if chan else []

    def thread_summary(self, message: Message) -> dict[str, Any]:
        """The reply fields Slack adds to a thread root."""
        chan = self.channels.get(message.channel)
        reply_ts = chan.replies.get(message.ts, []) if chan else []
        if not chan or not reply_ts:
            return {}
        authors = list(dict.fromkeys(chan.messages[ts].author for ts in reply_ts))
        return {
            "thread_ts": message.ts,
            "reply_count": len(reply_ts),
            "reply_users_count": len(authors),
            "reply_users": authors[:5],
            "latest_reply": reply_ts[-1],
            "is_locked": False,
            "subscribed": False,
        }

    # ---- membership and ephemeral messages ---------------------------------------------------

    def join(self, channel_id: str, user_id: str) -> None:
        self.channel(channel_id).members.add(user_id)

    def is_member(self, channel_id: str, user_id: str) -> bool:
        found = self.channels.get(channel_id)
        return found is not None and user_id in found.members

    def add_ephemeral(self, ephemeral: Ephemeral) -> Ephemeral:
        self.ephemerals.append(ephemeral)
        self.notify(Change("ephemeral", ephemeral.channel, ephemeral.ts))
        return ephemeral

    def remove_ephemeral(self, ephemeral: Ephemeral) -> None:
        """Gone from the user's screen (a response_url's replace_original or delete_original)."""
        self.ephemerals.remove(ephemeral)
        self.notify(Change("ephemeral", ephemeral.channel, ephemeral.ts))

    # ---- assistant threads ------------------------------------------------------------------

    def set_status(self, channel_id: str, thread_ts: str, text: str, loading: list[str]) -> None:
        if text:
            self.statuses[(channel_id, thread_ts)] = ThreadStatus(text, loading, self.clock())
        else:
            self.statuses.pop((channel_id, thread_ts), None)
        self.notify(Change("status", channel_id, thread_ts))

    def status(self, channel_id: str, thread_ts: str) -> str:
        found = self.statuses.get((channel_id, thread_ts))
        if found is None or self.clock() - found.set_at > self.status_ttl:
            return ""
        return found.text

    # ---- users and listeners -------------------------------------------------------------------

    def add_user(self, user: User) -> User:
        self.users[user.id] = user
        return user

    def subscribe(self, listener: Callable[[Change], None]) -> Callable[[], None]:
        """Call `listener` on every visible change; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def notify(self, change: Change) -> None:
        # Every post, edit and stream append passes here: the one place that sees new content.
        if change.message is not None and change.kind in ("posted", "updated"):
            change.message.record_mentions()
        for listener in list(self._listeners):
            listener(change)
