"""The three ports of the core: the platform surface a reply is written to, the LLM, and the store.

Adapters implement `ReplySurface`, `adapters/llm` implements `LanguageModel`, `storage/` implements
`ChatStore`. The core only ever sees these protocols and the exceptions below.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Literal, Protocol

from bridge.domain import (
    AttachmentRef,
    Chat,
    ChatKey,
    HistoryEntry,
    InboundMessage,
    MessageStatus,
    Role,
    StoredMessage,
    TokenUsage,
)

# --- rate limits ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateBucket:
    """A budget of platform writes shared by every reply that names the same key.

    `limit` writes per `period` seconds; the scheduler may learn better numbers at run time. A
    write in it also draws from `within`, a wider budget if the platform has one (Discord: the
    bot's global limit over all its channels).

    Without `burst`, at most `limit` writes in any `period` (a window: Discord's buckets, Slack's
    per-minute tiers). With it, a bucket that holds `burst` writes and refills at `limit` per
    `period`: a short burst, then that pace (Slack's "1 message per second per channel, short
    bursts allowed").
    """

    key: str
    limit: int
    period: float
    within: RateBucket | None = None
    burst: int = 0


@dataclass(frozen=True, slots=True)
class RateObservation:
    """What a platform's response headers said about a bucket (Discord's X-RateLimit-*)."""

    limit: int
    remaining: int
    reset_after: float


class RateLimited(Exception):
    """A platform write was refused with a 429; retry no sooner than `retry_after` seconds."""

    def __init__(self, retry_after: float, detail: str = "") -> None:
        super().__init__(f"rate limited, retry after {retry_after:.2f}s {detail}".strip())
        self.retry_after = retry_after


class PlatformError(Exception):
    """A platform write failed for a reason a retry will not fix."""


class PermissionDenied(PlatformError):
    """The bot may not write there (Discord 403/50013, Slack not_in_channel...): every reply in that
    place will fail the same way until an admin changes the bot's permissions."""


class PlatformUnavailable(Exception):
    """A platform write failed for a passing reason (network, 5xx): the same write may be retried.

    Not a PlatformError on purpose: the writer must not continue in a new message, which would
    show the text twice if the failed write had in fact gone through. `repeatable` is False when
    the write may have landed and posting it again could show it twice (a connection dropped
    after the request was sent, on a platform with no way to recognise a repeated post).
    """

    def __init__(self, *args: object, repeatable: bool = True) -> None:
        super().__init__(*args)
        self.repeatable = repeatable


# --- the platform side ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageLimit:
    """How much one platform message holds, in characters or in UTF-8 bytes."""

    size: int
    unit: Literal["chars", "utf8_bytes"] = "chars"


@dataclass(frozen=True, slots=True)
class PostedMessage:
    """A message the bot posted; `id` is the platform's id for it."""

    id: str


class ReplySurface(Protocol):
    """Where one reply to one user message is written; made by the adapter per inbound message.

    `post`/`update` are always called with the complete text the message must show, never a delta;
    a surface with native streaming (Slack) turns that into appends itself.
    """

    @property
    def message_limit(self) -> MessageLimit: ...

    @property
    def shows_own_progress(self) -> bool:
        """True for a native stream (Slack): the platform shows that the reply is still being
        written, so no cursor is added, and each update only ever extends the previous text."""
        ...

    def post_bucket(self) -> RateBucket:
        """The budget new messages (placeholders, continuations) draw from."""
        ...

    def edit_bucket(self) -> RateBucket:
        """The budget edits of this reply draw from (e.g. one Slack workspace's chat.update)."""
        ...

    async def start_typing(self, status: str = "") -> None:
        """Show that a reply is on its way. `status`: what the platform's own progress line says
        meanwhile, where it has one (Slack's assistant status: "is waiting for the model…");
        empty: its usual text. Called again, it changes that line."""
        ...

    async def stop_typing(self) -> None: ...

    async def post(
        self, text: str, *, response_number: int, ends_reply: bool = False
    ) -> PostedMessage:
        """Post a new message in the reply's place (a thread, a reply to the user's message).
        `ends_reply`: it is the response's last message and `text` its final text, so it carries
        the end's controls at once; unless the surface `shows_own_progress`, no write follows."""
        ...

    async def update(
        self, message: PostedMessage, text: str, *, final: bool, ends_reply: bool = False
    ) -> None:
        """Make `message` show `text`. `final`: the message will not change again (its Stop
        button goes); `ends_reply`: it is also the response's last message, which alone gets the
        end's controls (feedback buttons). Raise RateLimited on a 429, PlatformError otherwise."""
        ...

    async def set_title(self, title: str) -> None: ...

    async def notify(self, text: str) -> None:
        """A short notice to the message's author that is not a reply (a limit, a refusal):
        Slack shows it to the author only (chat.postEphemeral); Discord replies to the message
        without pinging anyone. Raise RateLimited on a 429, PlatformError otherwise."""
        ...

    def take_rate_observation(self) -> RateObservation | None:
        """The latest rate-limit headers the last write saw, if the platform sends them."""
        ...

    @property
    def controls_shown(self) -> bool:
        """True when the reply's messages carry controls (a Stop button) that its last write
        must change: the writer then writes the last message at the end even when its text is
        already shown."""
        ...

    def end_reply(self, ending: ReplyEnding) -> None:
        """How the reply ends, told before its last write (no platform call here): the last
        write (`ends_reply`) drops the Stop button and, for an answer, adds the feedback
        buttons."""
        ...

    def show_tools(self, activity: Sequence[ToolActivity]) -> bool:
        """The reply's tool calls so far, for its next write (no platform call here). True when
        the platform shows them natively (Slack's native stream: task cards, sent with the next
        append); False: it cannot, and the responder shows a status line instead."""
        ...


class ReplyEnding(StrEnum):
    """How a reply ended, as its surface shows it (feedback buttons only under an answer)."""

    ANSWERED = "answered"  # the model's text, complete or cut by a limit
    STOPPED = "stopped"  # a user stopped it; its text so far stands
    FAILED = "failed"  # a notice instead of (or after) the text


# --- files on users' messages --------------------------------------------------------------


class FileUnavailable(Exception):
    """A file could not be downloaded: gone, refused, not what the platform announced, or over
    the size it may have (`too_large`: the download stopped there)."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


class FileSource(Protocol):
    """Downloads files of users' messages, per platform (Slack: with the bot token)."""

    async def fetch(self, ref: AttachmentRef, max_bytes: int) -> bytes:
        """The file's bytes; FileUnavailable past `max_bytes` (never reads more than that plus
        one chunk), on an HTTP error, or on an HTML page instead of the file (Slack's login page
        when the token may not read it)."""
        ...


class FileVault(Protocol):
    """Where downloaded files are kept so that later turns still see them (`storage.files_dir`)."""

    async def put(self, message_id: int, name: str, data: bytes) -> str:
        """Keep `data` for the user message `message_id`; returns its key."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The bytes kept under `key`; None when they are gone (retention, a deleted folder)."""
        ...

    async def prune(self, older_than_seconds: float) -> int:
        """Delete files older than this (retention follows the messages'); returns how many."""
        ...


# --- the LLM side --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image sent to the model with a turn (already downscaled): PNG, JPEG, GIF or WebP."""

    mime_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call. `name` is qualified by its server, "server.tool" (the name
    admins select tools by); the LLM adapter maps it to a name the API accepts and back."""

    name: str
    description: str
    # The JSON schema of its arguments (an object schema, as MCP's `inputSchema`).
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model asked for: `arguments` is the JSON text as the model wrote it (it may
    be malformed; the tool loop tells the model so)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ChatTurn:
    role: Role
    content: str
    # Images go to the model as image content parts after `content` (user turns only).
    images: tuple[ImagePart, ...] = ()
    # An assistant turn that asked for tools (its `content` may be empty).
    tool_calls: tuple[ToolCall, ...] = ()
    # A tool turn (role TOOL): the call it answers.
    tool_call_id: str = ""


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    model: str
    messages: Sequence[ChatTurn]
    temperature: float
    n: int = 1
    max_tokens: int | None = None
    # Offered to the model; empty: none (and tool turns of the history are left out on the wire).
    tools: tuple[ToolSpec, ...] = ()
    # "none": the tools (and the results of earlier calls) go with the request, but the model
    # may call none of them: it answers (the last of a reply's tool rounds).
    tool_choice: Literal["auto", "none"] = "auto"


@dataclass(frozen=True, slots=True)
class Delta:
    choice: int
    text: str


@dataclass(frozen=True, slots=True)
class Reasoning:
    """Text of the model's reasoning (`reasoning_content`, `reasoning` or a `<think>` block):
    never shown as reply text."""

    choice: int
    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    choice: int
    reason: str


@dataclass(frozen=True, slots=True)
class ToolCalls:
    """The model's turn asks for these tools (all of a choice's calls, assembled from the
    streamed fragments); sent before that choice's `Finished`."""

    choice: int
    calls: tuple[ToolCall, ...]


StreamEvent = Delta | Reasoning | ToolCalls | Finished | TokenUsage


class LLMError(Exception):
    """The LLM call failed. `retryable` errors may be retried if no text was shown yet."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class LanguageModel(Protocol):
    def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        """Stream deltas, finish reasons and, last, the usage the server reported (if any).

        Raises LLMError; an interruption between events surfaces as LLMError too. A stream that
        stalls is not cut by the adapter: the caller times the gaps between events.
        """
        ...

    async def complete(self, request: CompletionRequest) -> str:
        """A short non-streaming completion (titles)."""
        ...


# --- tools (MCP servers) ------------------------------------------------------------------


class ToolFailed(Exception):
    """A tool could not be run or answered with an error: its server is down, the tool is
    unknown or refused the arguments, or it took longer than its server's `timeout`
    (`timed_out`). The message is for the model (and the log): never a secret of the config."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class ToolBox(Protocol):
    """The tools of the configured MCP servers (`adapters/mcp`)."""

    def available(self, selection: Sequence[str]) -> tuple[ToolSpec, ...]:
        """The tools offered now of those `selection` names: "server.tool", "server.*" or "*".
        A server that is down offers none until it is back."""
        ...

    async def call(self, name: str, arguments: Mapping[str, Any]) -> str:
        """Run one tool (its qualified name) within its server's timeout; its result as text.
        Raises ToolFailed."""
        ...


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """A call the tool loop ran: what goes back to the model (already capped and redacted)."""

    call: ToolCall
    content: str
    error: bool = False  # failed, timed out or refused: `content` says so
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class ToolActivity:
    """One tool call as a reply shows its progress."""

    id: str
    title: str  # the qualified name, e.g. "docs.search"
    status: Literal["in_progress", "complete", "error"]
    detail: str = ""  # e.g. "timed out after 10 s"


# --- where replies go, outside a live event ------------------------------------------------


class ReplyPlaces(Protocol):
    """Per platform: a surface for a stored message, with no inbound event at hand (recovery)."""

    platform: str

    def surface_for(
        self,
        chat: ChatKey,
        user_message: StoredMessage,
        *,
        adopt: Sequence[str] = (),
        limit: MessageLimit | None = None,
    ) -> ReplySurface | None:
        """Where a reply to `user_message` goes; None when the platform is not connected.

        `adopt`: messages of a reply a dead process left (crash recovery). They may still be
        streaming natively and a status may still show: ending the reply ends those too. `limit`
        is the one that reply was laid out with (None: the platform's usual one).
        """
        ...


# --- the store -----------------------------------------------------------------------------


class StoreUnavailable(Exception):
    """The database failed for a passing reason (connection lost, locked, restarting): the same
    call may succeed when retried. Everything else the store raises is a fault of the request."""


@dataclass(frozen=True, slots=True)
class OwnerRecord:
    """A bridge process as the store knows it; see `bridge.ownership` for when it is dead."""

    id: str
    host: str
    pid: int
    heartbeat_at: datetime
    stopped_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Orphan:
    """A user message still waiting for its answer, with the replies already begun for it."""

    chat: ChatKey
    user_message: StoredMessage
    owner: str
    replies: tuple[StoredMessage, ...] = ()


@dataclass(frozen=True, slots=True)
class ReplyProgress:
    """One write of an assistant message while or after it streams."""

    content: str
    status: MessageStatus
    platform_message_ids: Sequence[str] = ()
    error: str | None = None
    model: str | None = None
    usage: TokenUsage | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RuntimeOverride:
    """Settings an admin set for one channel or thread in chat (`/bridge model ...`)."""

    platform: str
    scope: str  # the channel id (Discord: or the thread's id)
    values: dict[str, str]
    set_by: str = ""
    set_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class UsageLine:
    """Tokens one user or channel used in one UTC day, over how many replies."""

    key: str
    tokens: int
    replies: int


@dataclass(frozen=True, slots=True)
class UsageReport:
    day: date
    users: tuple[UsageLine, ...]
    channels: tuple[UsageLine, ...]


@dataclass(frozen=True, slots=True)
class ReplyOutcome:
    """How a counted reply ended, added to its day's counters with its tokens (the console's
    errors and 429s per day)."""

    failed: bool = False
    rate_limited: int = 0  # the platform's 429s while the reply was written


class ChatStore(Protocol):
    async def get_or_create_chat(self, key: ChatKey) -> Chat: ...

    async def get_chat(self, key: ChatKey) -> Chat | None:
        """The chat at `key` if the bot has taken part in it."""
        ...

    async def accept_inbound(
        self, platform: str, message: InboundMessage, metadata: dict[str, Any] | None = None
    ) -> StoredMessage | None:
        """Atomically claim the event id and store the user's message (with `metadata`: the
        settings it is answered with, so crash recovery answers it the same way).

        Returns None when the event was already claimed (a retry or a replay): nothing is stored.
        """
        ...

    async def claim_event(self, platform: str, event_id: str) -> bool:
        """Claim an event id that stores no message; False when it was claimed before."""
        ...

    async def add_message(
        self,
        chat_id: int,
        role: Role,
        content: str,
        *,
        status: MessageStatus,
        reply_to_id: int | None = None,
        response_number: int = 0,
        author_id: str | None = None,
        platform_message_ids: Sequence[str] = (),
        model: str | None = None,
    ) -> StoredMessage: ...

    async def save_reply(self, message_id: int, progress: ReplyProgress) -> None: ...

    async def add_tool_round(
        self, chat_id: int, reply_to_id: int, outcomes: Sequence[ToolOutcome], *, model: str
    ) -> None:
        """One round of a reply's tool calls, in one transaction: an assistant message holding
        the calls (`metadata["tool_calls"]`: [{id, name, arguments}], content empty), then one
        TOOL message per outcome (`metadata`: tool_call_id, name, error, seconds), all with
        `reply_to_id` and status COMPLETE. `context_messages` returns them after the message
        they answer and before its reply, round after round, in the order stored."""
        ...

    async def context_messages(self, chat: Chat, upto_id: int, limit: int) -> list[StoredMessage]:
        """The newest `limit` messages of the chat up to and including `upto_id`, above the
        chat's context floor, in conversation order (each reply right after what it answers)."""
        ...

    async def import_history(self, chat: Chat, entries: Sequence[HistoryEntry]) -> int:
        """Store messages that predate the bot once; returns how many were new."""
        ...

    async def set_title(self, chat_id: int, title: str) -> None: ...

    async def reset_context(self, chat_id: int) -> None: ...

    async def reset_place(self, platform: str, workspace: str, channel: str) -> int:
        """/reset for a whole channel: every chat in it starts fresh (Slack: each thread of the
        channel; Discord: the one chat of the channel or thread). Returns how many chats."""
        ...

    # --- policy: runtime overrides and daily token usage ---

    async def runtime_overrides(self) -> list[RuntimeOverride]:
        """Every runtime override (a small table: one row per channel an admin configured)."""
        ...

    async def set_runtime_override(
        self, platform: str, scope: str, key: str, value: str, *, set_by: str
    ) -> None: ...

    async def clear_runtime_overrides(self, platform: str, scope: str) -> bool:
        """Remove the channel's runtime overrides; False when it had none."""
        ...

    async def add_usage(
        self,
        day: date,
        platform: str,
        *,
        user: str,
        channel: str,
        tokens: int,
        outcome: ReplyOutcome | None = None,
    ) -> None:
        """Count one reply's tokens for its user and its channel (one write). With `outcome`,
        also for the platform's day, with whether it failed and its 429s (same write)."""
        ...

    async def usage_of(
        self, day: date, platform: str, *, user: str, channel: str
    ) -> tuple[int, int]:
        """Tokens (user's, channel's) counted on `day`."""
        ...

    async def usage_report(self, day: date, platform: str, *, limit: int = 10) -> UsageReport:
        """The day's biggest users and channels of one platform, most tokens first."""
        ...

    async def mark_answered(self, user_message_id: int) -> None:
        """The message's reply ended (with its text or a notice): it leaves the inbox."""
        ...

    # --- rich conversations: attachments, user edits, feedback ---

    async def get_message(self, message_id: int) -> StoredMessage | None: ...

    async def update_metadata(self, message_id: int, values: dict[str, Any]) -> None:
        """Set these keys of the message's metadata (the others stay)."""
        ...

    async def find_message(self, key: ChatKey, platform_message_id: str) -> StoredMessage | None:
        """The stored message of the chat at `key` that shows as `platform_message_id` (a user
        message, or any of a reply's messages)."""
        ...

    async def edit_message(self, message_id: int, content: str, *, deleted: bool = False) -> None:
        """A user edited (or deleted) their message: the history shows the new text (a deleted
        one is kept with `metadata.deleted` and left out of later prompts)."""
        ...

    async def record_vote(self, message_id: int, user: str, value: str | None) -> bool:
        """One user's vote on a reply ("up", "down"; None takes it back); the last one counts.
        False when nothing changed."""
        ...

    async def votes(self, message_id: int) -> dict[str, str]:
        """The votes on a reply, by user."""
        ...

    # --- owners: which process answers what (crash recovery) ---

    @property
    def owner(self) -> str:
        """This process's owner id, written into every message it stores."""
        ...

    async def register_owner(self, host: str, pid: int) -> None: ...

    async def heartbeat(self) -> None: ...

    async def release_owner(self) -> None:
        """This process stops: whatever it leaves unfinished may be recovered at once."""
        ...

    async def owners(self) -> list[OwnerRecord]: ...

    async def orphans(
        self, owner_ids: Sequence[str], limit: int, after_id: int = 0
    ) -> list[Orphan]:
        """The oldest user messages of these owners, after `after_id`, not answered yet."""
        ...

    async def take_over(self, message_ids: Sequence[int], from_owner: str) -> set[int]:
        """Make this process the owner of those messages still owned by `from_owner`;
        returns the ids it took (another instance may have been faster)."""
        ...

    async def forget_owner(self, owner_id: str) -> bool:
        """Drop a dead owner that owns no unfinished message any more; False if it still does."""
        ...

    async def prune_events(self, older_than_seconds: float) -> int: ...

    async def prune_messages(self, older_than_seconds: float) -> int:
        """Delete chats with no message newer than this, and older messages (retention)."""
        ...


# --- the cluster: leases and handoffs between instances (`[cluster]`) ----------------------


@dataclass(frozen=True, slots=True)
class Lease:
    """Who answers a Slack workspace or a Discord shard: `holder` (an instance id) until
    `expires_at`, as the database's clock says. `owner` is the holder's process run."""

    name: str
    holder: str | None
    owner: str | None
    expires_at: datetime | None
    live: bool  # held and not expired, by the database's clock when it was read


@dataclass(frozen=True, slots=True)
class Handoff:
    """An event for a lease's holder, from an instance that does not hold the lease."""

    id: int
    lease: str
    platform: str
    event_id: str
    chat: str  # the events of one chat are answered one after another, in queue order
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Acquired:
    """A lease taken; `previous_owner`: the process run that held it before, if another."""

    previous_owner: str | None


class Subscription(Protocol):
    async def close(self) -> None: ...


class ClusterStore(Protocol):
    """Leases with expiry on the database's clock, a handoff queue, and wake-ups between
    instances (PostgreSQL: LISTEN/NOTIFY). Every call is one short transaction."""

    async def leases(self) -> list[Lease]: ...

    async def acquire_lease(self, name: str, holder: str, seconds: float) -> Acquired | None:
        """Hold `name` for `seconds` if it is free, expired, or held by this process run."""
        ...

    async def renew_leases(self, names: Sequence[str], holder: str, seconds: float) -> set[str]:
        """Extend the leases this process run still holds; returns those (the rest were taken)."""
        ...

    async def release_leases(self, names: Sequence[str], holder: str) -> None:
        """Give leases up at once (a planned stop); the others are woken."""
        ...

    async def hand_over(
        self, lease: str, platform: str, event_id: str, chat: str, payload: dict[str, Any]
    ) -> bool:
        """Queue an event for the lease's holder and wake it; False if the event was queued
        already (a platform retry that reached another instance)."""
        ...

    async def take_handoffs(self, leases: Sequence[str], limit: int) -> list[Handoff]:
        """The oldest events of these leases that nobody took, marked taken by this process run
        (instances taking at once never get the same row)."""
        ...

    async def finish_handoff(self, handoff_id: int) -> None:
        """The event is handled: its row goes (if this process run still has it)."""
        ...

    async def return_handoff(self, handoff_id: int) -> None:
        """The event could not be handled now: back in the queue, to be taken again."""
        ...

    async def reopen_handoffs(self, leases: Sequence[str]) -> int:
        """Events of these leases taken by another process run become takeable again (a new
        holder takes what the previous one took and did not finish)."""
        ...

    async def live_instances(self, within_seconds: float) -> int:
        """Processes whose heartbeat is this recent (the database's clock), not stopped."""
        ...

    async def subscribe(self, on_wake: Callable[[str, str], None]) -> Subscription | None:
        """Call `on_wake(topic, detail)` when another instance wakes this one ("handoff" with a
        lease name, "lease", "overrides"); None where the database cannot (SQLite: poll)."""
        ...

    async def wake(self, topic: str, detail: str = "") -> None: ...


# --- browsing conversations (the admin console) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChatFilter:
    """Which conversations to list; None (or "") is "any". Every given condition must hold."""

    platform: str | None = None
    workspace: str | None = None  # a Slack workspace or a Discord guild
    channel: str | None = None
    user: str | None = None  # a user who wrote in it (their platform id)
    status: MessageStatus | None = None  # a reply in it has this status
    since: datetime | None = None  # last activity at or after
    until: datetime | None = None  # last activity before
    text: str | None = None  # a message of it contains this (case-insensitive)


@dataclass(frozen=True, slots=True)
class ChatCursor:
    """Where a page ended: the next page holds the conversations less recently active than this
    one (keyset paging: as fast on the thousandth page as on the first)."""

    last_activity: datetime
    chat_id: int


@dataclass(frozen=True, slots=True)
class ChatSummary:
    id: int
    key: ChatKey
    title: str | None
    messages: int  # the user messages and replies (a reply's tool rounds not counted)
    last_activity: datetime
    last_reply_status: MessageStatus | None  # None: nothing answered yet


@dataclass(frozen=True, slots=True)
class ChatPage:
    chats: tuple[ChatSummary, ...]
    next: ChatCursor | None  # None: this is the last page


@dataclass(frozen=True, slots=True)
class ChatThread:
    """One conversation: its messages in conversation order (a question, its tool rounds, its
    reply), the newest `limit` of them; `earlier` is how many older ones were left out."""

    chat: ChatSummary
    messages: tuple[StoredMessage, ...]
    earlier: int = 0


class ConversationBrowser(Protocol):
    """Read-only queries over the stored conversations, for people looking at them."""

    async def browse(
        self, where: ChatFilter, *, after: ChatCursor | None = None, limit: int = 50
    ) -> ChatPage:
        """The conversations that match, most recently active first, `limit` at most."""
        ...

    async def conversation(self, chat_id: int, *, limit: int = 500) -> ChatThread | None: ...


# --- replies streaming now, for watchers (the console's live page) ---------------------------


@dataclass(frozen=True, slots=True)
class LiveReply:
    """A reply as it begins: where it goes, for whom, with which model."""

    reply_id: int  # the stored id of the user message it answers: unique, and names its chat
    chat_id: int
    platform: str
    workspace: str
    channel: str  # the chat's channel (Slack: and thread, as the chat key has it)
    user: str  # the asker's platform id
    model: str
    started_at: float  # wall clock, epoch seconds


class ReplyFeed(Protocol):
    """Told about every reply while it streams, from the responder's own progress (never read
    back from the store). Called inline on the event loop: each call must be quick and must not
    raise (a failing watcher would fail the reply it watches)."""

    def started(self, reply: LiveReply) -> None: ...

    def shown(self, reply_id: int, text: str, *, updates: int, rate_limited: int) -> None:
        """The reply's visible text after a write (all its messages, joined), and its platform
        writes and 429s so far."""
        ...

    def ended(self, reply_id: int, status: MessageStatus, error: str | None) -> None: ...


# --- usage over days (the console's usage page) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class UsageRange:
    """Which UTC days to read, both ends included; `platform` None is every platform."""

    since: date
    until: date
    platform: str | None = None


@dataclass(frozen=True, slots=True)
class UsageDay:
    """One platform's day: tokens and replies counted for the quotas, failed replies and 429s.

    `rate_limited` is None on days before replies' outcomes were counted (the 429s of those
    days were not kept); `failed` is then counted from the stored replies' status.
    """

    day: date
    platform: str
    tokens: int
    replies: int
    failed: int
    rate_limited: int | None


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """A channel's or a user's tokens and replies over a range of days."""

    platform: str
    key: str
    tokens: int
    replies: int


@dataclass(frozen=True, slots=True)
class UsageSummary:
    days: tuple[UsageDay, ...]  # by day, then platform; days with nothing counted left out
    channels: tuple[UsageTotal, ...]  # the biggest, most tokens first
    users: tuple[UsageTotal, ...]
    channel_count: int  # how many channels and users the range has in all
    user_count: int
    # The first day in the range whose errors and 429s come from counters kept per reply;
    # None: no such day (every day's 429s are unknown).
    counted_since: date | None


@dataclass(frozen=True, slots=True)
class QuotaLine:
    """A user or channel at or near its daily token quota."""

    platform: str
    key: str
    tokens: int
    quota: int

    @property
    def share(self) -> float:
        return self.tokens / self.quota if self.quota else 0.0

    @property
    def over(self) -> bool:
        return bool(self.quota) and self.tokens >= self.quota


@dataclass(frozen=True, slots=True)
class QuotaState:
    """Who used at least `near` of their quota on `day`, the most tokens first; the counts say
    how many in all (the lines may stop at a limit)."""

    day: date
    near: float
    users: tuple[QuotaLine, ...]
    channels: tuple[QuotaLine, ...]
    user_count: int
    channel_count: int


class UsageBrowser(Protocol):
    """Read-only totals of the daily counters, for people looking at them. Every call reads
    the per-day aggregates (a row per day and user, channel or platform), never every message."""

    async def usage(self, where: UsageRange, *, top: int = 20) -> UsageSummary: ...

    async def quota_state(
        self,
        day: date,
        *,
        user_quota: int,
        channel_quota: int,
        platform: str | None = None,
        near: float = 0.8,
        limit: int = 100,
    ) -> QuotaState:
        """Users and channels at `near` (a share) of their quota or over it on `day`; a quota of
        0 (unlimited) lists none."""
        ...
