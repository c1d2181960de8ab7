"""SQLAlchemy tables for chats, messages (replies' tool rounds among them, and users' votes on
replies), processed inbound events, owners, the admin policy (its token counters by day and by
month) and the cluster (leases, handoffs).

The Alembic migrations in `storage/migrations` create exactly these; a test compares the two.
They also create what a model cannot describe: the triggers that keep `token_usage_months`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, overload

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# A reply that failed (its first message): the partial index's condition, which a query must
# repeat as it is, in literals (SQLite uses a partial index only for a WHERE that names its terms).
FAILED_REPLIES = (
    "status = 'failed' AND role = 'assistant' AND tool_step = 0 AND response_number = 0"
)
FAILED_REPLY_COLUMNS = ("updated_at", "chat_id", "status", "role", "tool_step", "response_number")


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(moment: datetime) -> datetime: ...


@overload
def as_utc(moment: None) -> None: ...


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes (stored as UTC)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class ChatRow(Base):
    __tablename__ = "chats"
    __table_args__ = (
        UniqueConstraint("platform", "workspace", "channel", "thread", name="uq_chats_location"),
        # The console lists conversations by last activity, newest first, page after page.
        Index("ix_chats_updated_at_id", "updated_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String(32))
    workspace: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(64))
    thread: Mapped[str] = mapped_column(String(64))
    title: Mapped[str | None] = mapped_column(String(200))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    context_floor: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class MessageRow(Base):
    __tablename__ = "messages"
    __table_args__ = (
        # "The latest N messages of a chat" walks this index backwards.
        Index("ix_messages_chat_id_id", "chat_id", "id"),
        UniqueConstraint("chat_id", "platform_message_id", name="uq_messages_platform_id"),
        Index("ix_messages_status_updated_at", "status", "updated_at"),
        # "Messages of dead owners" and "has this message a reply" (the inbox queries).
        Index("ix_messages_owner_status", "owner", "status"),
        Index("ix_messages_reply_to_id", "reply_to_id"),
        # The console's "conversations of this user".
        Index("ix_messages_author_id_chat_id", "author_id", "chat_id"),
        # The console's "conversations with a reply of this status": one probe per conversation
        # (SQLite would otherwise read every message of the status through the index above it).
        Index("ix_messages_chat_id_status", "chat_id", "status"),
        # The usage page's failed replies of the days counted before replies' outcomes were:
        # partial, so only failed replies enter it. It holds the condition's columns too, so
        # that SQLite reads it alone (and prefers it to ix_messages_status_updated_at).
        Index(
            "ix_messages_failed_replies",
            *FAILED_REPLY_COLUMNS,
            sqlite_where=text(FAILED_REPLIES),
            postgresql_where=text(FAILED_REPLIES),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("chats.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text, default="")
    author_id: Mapped[str | None] = mapped_column(String(64))
    # The first platform message of this message; continuations are listed in platform_message_ids.
    platform_message_id: Mapped[str | None] = mapped_column(String(64))
    platform_message_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    reply_to_id: Mapped[int | None] = mapped_column(BigInteger)
    response_number: Mapped[int] = mapped_column(Integer, default=0)
    # 0: a user message or a reply's text. From 1: a row of a reply's tool rounds (role
    # "assistant" holding a round's calls, or "tool" holding one result; `reply_to_id` is the
    # user message), numbered in the order they go to the model. Never a reply of its own.
    # The database's default, not the model's: inserts that do not name it leave it out.
    tool_step: Mapped[int] = mapped_column(Integer, server_default="0")
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(100))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    # The process answering this message (a user message) or writing it (a reply); see OwnerRow.
    owner: Mapped[str | None] = mapped_column(String(64))
    # "metadata" is reserved on declarative classes, hence the attribute name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class FeedbackVoteRow(Base):
    """One user's 👍/👎 on a reply; the last one counts. Goes with its message (retention)."""

    __tablename__ = "feedback_votes"
    __table_args__ = (CheckConstraint("value IN ('up', 'down')", name="ck_feedback_votes_value"),)

    message_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(8))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class OwnerRow(Base):
    """A bridge process, alive while its heartbeat is recent and it has not stopped."""

    __tablename__ = "owners"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ProcessedEventRow(Base):
    __tablename__ = "processed_events"
    __table_args__ = (UniqueConstraint("platform", "event_id", name="uq_processed_events"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(128))
    claimed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )


class RuntimeOverrideRow(Base):
    """Settings an admin set in chat for one channel (Discord: or thread), key by key."""

    __tablename__ = "runtime_overrides"

    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    scope: Mapped[str] = mapped_column(String(100), primary_key=True)
    values: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    set_by: Mapped[str] = mapped_column(String(64), default="")
    set_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TokenUsageRow(Base):
    """Tokens one user or one channel (`scope`) used on one UTC day: the daily quotas' counter.

    Scope "platform" (key "") counts a platform's whole day, written with the user's and the
    channel's rows when the reply's outcome is told: its failed replies and 429s are known from
    its first such day on (the console's usage page reads them).
    """

    __tablename__ = "token_usage"
    __table_args__ = (
        # The usage page sums one scope's rows over a range of days: read from this index alone
        # (it holds every column those sums need), never from the table or the other scopes.
        Index("ix_token_usage_scope_day", "scope", "day", "platform", "key", "tokens", "replies"),
    )

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    # "user", "channel" or "platform"
    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    replies: Mapped[int] = mapped_column(Integer, default=0)
    # Replies that failed, and the platform's 429s while replies were written. The database's
    # default: rows counted without an outcome leave them out.
    failed: Mapped[int] = mapped_column(Integer, server_default="0")
    rate_limited: Mapped[int] = mapped_column(Integer, server_default="0")


class TokenUsageMonthRow(Base):
    """A user's or a channel's tokens and replies of one UTC month (`month`: its first day): the
    sum of its `token_usage` rows of that month. The usage page sums a range's whole months from
    these instead of every day of them.

    Kept by the database, not by the code: triggers on `token_usage` (revision 0010, not
    described here) add every insert, change and delete of a daily row to its month in the same
    statement. On SQLite a migration that rebuilds `token_usage` must create them again.
    """

    __tablename__ = "token_usage_months"
    # Keyed as the usage page reads it (a scope's months), nothing else indexed: SQLite keeps
    # the rows in that order (no rowid), PostgreSQL updates a row's counts in place (no index
    # holds them), as the triggers do on every reply.
    __table_args__ = ({"sqlite_with_rowid": False},)

    # "user" or "channel" (the platform's days are read day by day)
    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    replies: Mapped[int] = mapped_column(Integer, default=0)


class LeaseRow(Base):
    """Who answers a Slack workspace or a Discord shard when several instances run (`[cluster]`).

    Held while `expires_at` (the database's clock) is ahead; `owner` is the holder's process run
    (its owners row), whose replies a new holder finishes or answers.
    """

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(64))
    owner: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acquired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class HandoffRow(Base):
    """An event received by an instance that does not hold its lease, waiting for the holder.

    One row per platform event (a retry to another instance adds none); the holder marks it
    taken, answers it and deletes it. A row taken by a holder that died is taken again by the
    next one (the stored message's own dedupe keeps that from answering twice).
    """

    __tablename__ = "handoffs"
    __table_args__ = (
        UniqueConstraint("platform", "event_id", name="uq_handoffs_event"),
        Index("ix_handoffs_lease_id", "lease", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    lease: Mapped[str] = mapped_column(String(100))
    platform: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(128))
    chat: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    taken_by: Mapped[str | None] = mapped_column(String(64))
    taken_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
