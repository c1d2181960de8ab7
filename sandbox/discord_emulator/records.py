"""What tests, the sandbox and benchmarks observe in the emulator: requests, messages, stats.

All records are immutable snapshots; times come from the emulator's clock (monotonic by default).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One REST request as the emulator received and answered it."""

    method: str
    path: str
    route: str | None  # discord.py-style route key, e.g. "POST /channels/{channel_id}/messages"
    major: str | None  # the major parameter the bucket is shared by (channel, guild or webhook)
    json: Any
    time: float
    status: int


@dataclass(frozen=True, slots=True)
class ShownMessage:
    """A message as its channel currently shows it, plus how it got there."""

    id: int
    channel_id: int
    author_id: int
    content: str
    type: int
    flags: int
    embeds: tuple[dict[str, Any], ...]
    attachments: tuple[dict[str, Any], ...]
    message_reference: dict[str, Any] | None
    allowed_mentions: dict[str, Any] | None  # as received with the last create/edit; None = absent
    mentions: tuple[int, ...]  # users this message pings under that allowed_mentions
    mention_everyone: bool
    created_at: float
    edit_count: int
    edit_times: tuple[float, ...]
    webhook_id: int | None
    interaction_id: int | None
    # Action rows of buttons (type 1 rows of type 2 buttons), as the bot last sent them.
    components: tuple[dict[str, Any], ...] = ()
    # emoji -> the users who reacted with it.
    reactions: dict[str, tuple[int, ...]] = field(default_factory=dict)
    edited: bool = False  # edited_timestamp is set

    def custom_ids(self) -> list[str]:
        """The custom_ids of the message's buttons, row by row."""
        return [
            str(button.get("custom_id"))
            for row in self.components
            for button in row.get("components", ())
            if button.get("custom_id") is not None
        ]


class TypingEvent(NamedTuple):
    channel_id: int
    time: float


@dataclass(frozen=True, slots=True)
class Change:
    """One visible change, passed to `subscribe` listeners (the sandbox prints these).

    `kind` is "posted", "edited", "deleted" or "reacted" (with `message`), "typing", "thread"
    (a thread opened or renamed; `channel_id` is the thread's) or "channel" (a channel renamed).
    """

    kind: str
    channel_id: int
    message: ShownMessage | None = None


@dataclass(frozen=True, slots=True)
class ThreadInfo:
    id: int
    parent_id: int
    guild_id: int
    name: str
    type: int
    owner_id: int
    auto_archive_duration: int
    starter_message_id: int | None  # equal to `id` for a thread started from a message


@dataclass(frozen=True, slots=True)
class RegisteredCommand:
    id: int
    name: str
    type: int
    guild_id: int | None  # None for a global command
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class InteractionRecord:
    """An interaction sent to the bot and what the bot answered (None until it does)."""

    id: int
    token: str
    command: str
    channel_id: int
    user_id: int
    options: tuple[dict[str, Any], ...]
    created_at: float
    response_type: int | None
    response: dict[str, Any] | None
    responded_at: float | None
    message_id: int | None  # the original response message, once there is one
    followup_ids: tuple[int, ...]
    type: int = 2  # 2: a slash command (`command`); 3: a click on a button (`custom_id`)
    custom_id: str | None = None
    source_message_id: int | None = None  # the message whose button was clicked


@dataclass
class EmulatorStats:
    """Running counters; `violations` counts requests that arrived while their bucket was empty."""

    requests: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0  # 429s sent, injected ones included
    rate_limited_by_route: Counter[str] = field(default_factory=Counter)
    violations: int = 0
    # Keyed by route, or "global" for the global limit.
    violations_by_route: Counter[str] = field(default_factory=Counter)
    server_errors: int = 0  # injected 5xx answers sent (see DiscordEmulator.inject_server_error)
    dispatches: int = 0  # dispatch frames queued to sessions (one per session per event)
    replayed: int = 0  # dispatch frames re-sent on RESUME
    identifies: int = 0
    resumes: int = 0
