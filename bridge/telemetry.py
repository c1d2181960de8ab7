"""What the responder reports: a `ReplyReport` per reply, told to a `ReplyObserver` as it works;
`BridgeMetrics` is the observer that keeps the bridge's Prometheus metrics. Platform-free.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from bridge.domain import MessageStatus, TokenUsage
from bridge.metrics import Registry


class EventOutcome(StrEnum):
    HANDLED = "handled"
    DUPLICATE = "duplicate"  # a platform retry or replay of an event answered before
    REFUSED = "refused"  # could not be stored (the database stayed unavailable)
    DENIED = "denied"  # [access] does not let its author or place in
    LIMITED = "limited"  # over one of [limits] (or the queue): not answered, told so
    HANDED_OVER = "handed_over"  # [cluster]: queued for the instance holding its lease


class ErrorKind(StrEnum):
    LLM = "llm"
    LLM_TIMEOUT = "llm_timeout"
    PLATFORM = "platform"
    PERMISSION = "permission"  # the bot may not write in that channel
    STORAGE = "storage"
    SHUTDOWN = "shutdown"
    TITLE = "title"
    INTERNAL = "internal"


@dataclass(slots=True)
class ReplyReport:
    """What happened to one reply (all its choices); metrics and tests read it."""

    user_message_id: int
    assistant_message_ids: list[int]
    status: MessageStatus
    error: str | None = None
    # Why the reply failed, or what went wrong although it completed (platform writes failed).
    error_kind: ErrorKind | None = None
    received_at: float = 0.0
    first_delta_at: float | None = None
    first_text_at: float | None = None
    final_at: float | None = None
    visible_updates: int = 0
    rate_limited: int = 0
    attempts: int = 1
    usage: TokenUsage | None = None
    texts: list[str] = field(default_factory=list)
    # The prompt's size as estimated before the request (the usage when the server sends none).
    estimated_prompt_tokens: int = 0
    # Its tool rounds, when it was offered tools: rounds, tools used, each round's overhead.
    tools: dict[str, Any] | None = None


class ReplyObserver(Protocol):
    """Told about every event and reply. Called inline on the event loop: it must be quick and
    must not raise (a failing observer would fail the reply it observes)."""

    def event(self, platform: str, outcome: EventOutcome) -> None: ...

    def reply_started(self, platform: str) -> None: ...

    def reply_finished(self, platform: str, report: ReplyReport) -> None: ...

    def error(self, platform: str, kind: ErrorKind) -> None: ...


class NoObserver:
    """The default: observes nothing."""

    def event(self, platform: str, outcome: EventOutcome) -> None:
        pass

    def reply_started(self, platform: str) -> None:
        pass

    def reply_finished(self, platform: str, report: ReplyReport) -> None:
        pass

    def error(self, platform: str, kind: ErrorKind) -> None:
        pass


# Sub-second resolution near the start: a first token later than a few seconds is already bad.
FIRST_TOKEN_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)
REPLY_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
FINAL_STATUSES = (MessageStatus.COMPLETE, MessageStatus.FAILED, MessageStatus.STOPPED)


class BridgeMetrics:
    """A `ReplyObserver` that keeps the bridge's metrics in a `Registry`."""

    def __init__(self, registry: Registry, platforms: Iterable[str] = ()) -> None:
        self.registry = registry
        r = registry
        self.active = r.gauge(
            "chat_bridge_active_replies",
            "Replies in progress, including those queued behind an earlier reply in their chat.",
            ["platform"],
        )
        self.events = r.counter(
            "chat_bridge_events_total",
            "Inbound user messages by outcome: handled, duplicate (a retry or replay, skipped) "
            "or refused (could not be stored: the database stayed unavailable).",
            ["platform", "outcome"],
        )
        self.replies = r.counter(
            "chat_bridge_replies_total", "Finished replies by final status.", ["platform", "status"]
        )
        self.errors = r.counter(
            "chat_bridge_errors_total",
            "Errors by kind: llm, llm_timeout, platform, storage, shutdown, title, internal.",
            ["platform", "kind"],
        )
        self.tokens = r.counter(
            "chat_bridge_llm_tokens_total",
            "Tokens the LLM reported for replies, by kind (prompt or completion).",
            ["platform", "kind"],
        )
        self.edits = r.counter(
            "chat_bridge_visible_edits_total",
            "Visible updates of reply messages: edits and posts that showed new text.",
            ["platform"],
        )
        self.rate_limited = r.counter(
            "chat_bridge_rate_limited_total",
            "HTTP 429 answers the platform gave to reply writes.",
            ["platform"],
        )
        self.llm_retries = r.counter(
            "chat_bridge_llm_retries_total",
            "LLM requests retried after an error before the first token.",
            ["platform"],
        )
        self.first_token = r.histogram(
            "chat_bridge_llm_first_token_seconds",
            "Time from receiving a message to the LLM's first token.",
            ["platform"],
            buckets=FIRST_TOKEN_BUCKETS,
        )
        self.first_text = r.histogram(
            "chat_bridge_first_text_seconds",
            "Time from receiving a message to its reply first showing text on the platform.",
            ["platform"],
            buckets=FIRST_TOKEN_BUCKETS,
        )
        self.reply_time = r.histogram(
            "chat_bridge_reply_seconds",
            "Time from receiving a message to its reply's final text being shown.",
            ["platform"],
            buckets=REPLY_BUCKETS,
        )
        self.tool_calls = r.counter(
            "chat_bridge_tool_calls_total",
            "Tool calls the model asked for, by tool and outcome: ok, error (the tool or its "
            "server failed), timeout, refused (not offered, or arguments that are not a JSON "
            "object; the tool label is then `unknown` when the name is not offered).",
            ["platform", "tool", "outcome"],
        )
        self.votes = r.counter(
            "chat_bridge_feedback_votes_total",
            "👍/👎 votes users gave replies (a changed vote counts again; `withdrawn`: taken "
            "back).",
            ["platform", "vote"],
        )
        for platform in platforms:
            self._touch(platform)

    def _touch(self, platform: str) -> None:
        """Create a platform's main series at zero, so rate() sees its first increase."""
        self.active.labels(platform)
        for outcome in EventOutcome:
            self.events.labels(platform, outcome)
        for status in FINAL_STATUSES:
            self.replies.labels(platform, status)
        for kind in ("prompt", "completion"):
            self.tokens.labels(platform, kind)
        self.edits.labels(platform)
        self.rate_limited.labels(platform)

    # --- ReplyObserver -----------------------------------------------------------------------

    def event(self, platform: str, outcome: EventOutcome) -> None:
        self.events.labels(platform, outcome).inc()

    def reply_started(self, platform: str) -> None:
        self.active.labels(platform).inc()

    def reply_finished(self, platform: str, report: ReplyReport) -> None:
        self.active.labels(platform).dec()
        self.replies.labels(platform, report.status).inc()
        if report.error_kind is not None:
            self.errors.labels(platform, report.error_kind).inc()
        if report.usage is not None:
            self.tokens.labels(platform, "prompt").inc(report.usage.prompt_tokens)
            self.tokens.labels(platform, "completion").inc(report.usage.completion_tokens)
        self.edits.labels(platform).inc(report.visible_updates)
        self.rate_limited.labels(platform).inc(report.rate_limited)
        if report.attempts > 1:
            self.llm_retries.labels(platform).inc(report.attempts - 1)
        for tool, outcome in (report.tools or {}).get("calls", ()):
            self.tool_calls.labels(platform, tool, outcome).inc()
        for histogram, at in (
            (self.first_token, report.first_delta_at),
            (self.first_text, report.first_text_at),
            (self.reply_time, report.final_at),
        ):
            if at is not None:
                histogram.labels(platform).observe(max(at - report.received_at, 0.0))

    def error(self, platform: str, kind: ErrorKind) -> None:
        self.errors.labels(platform, kind).inc()

    def vote(self, platform: str, value: str | None) -> None:
        """A user's feedback on a reply changed (`ReplyControls.vote`)."""
        self.votes.labels(platform, value or "withdrawn").inc()
