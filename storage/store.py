"""The SQL implementation of the core's ChatStore port, on SQLite or PostgreSQL.

Hot paths (claiming an event, saving a reply's progress) are single Core statements; the event
claim relies on the unique constraint, so it is atomic across processes and instances.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import astuple
from datetime import timedelta
from functools import partial
from typing import Any, cast

from sqlalchemy import Select, Table, and_, case, delete, exists, func, or_, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bridge.domain import (
    Chat,
    ChatKey,
    HistoryEntry,
    InboundMessage,
    MessageStatus,
    Role,
    StoredMessage,
    TokenUsage,
)
from bridge.ports import Orphan, OwnerRecord, ReplyProgress, StoreUnavailable, ToolOutcome
from bridge.text import clean_text
from storage.browse import BrowseRows
from storage.cluster import ClusterRows
from storage.conversation import ConversationRows
from storage.group_commit import GroupCommit
from storage.models import ChatRow, MessageRow, OwnerRow, ProcessedEventRow, as_utc, utcnow
from storage.policy import PolicyStore
from storage.turns import WriterTurns
from storage.usage_browse import UsageRows
from storage.write_behind import WriteBehind

MESSAGES = cast(Table, MessageRow.__table__)
# The user message a reply or tool row answers (context_messages: is it deleted?).
_ANSWERED = MESSAGES.alias("answered")
CHATS = cast(Table, ChatRow.__table__)
EVENTS = cast(Table, ProcessedEventRow.__table__)
OWNERS = cast(Table, OwnerRow.__table__)
_FINISHED = tuple(s.value for s in MessageStatus if s.finished)
_UNFINISHED = tuple(s.value for s in MessageStatus if not s.finished)
# One accept_inbound call: the platform, the message and the metadata stored with it.
Inbound = tuple[str, InboundMessage, dict[str, Any] | None]


# OperationalErrors that are faults of the schema or the file, not passing: no retry fixes them.
_LASTING = ("no such table", "no such column", "syntax error", "malformed", "not a database")


def is_passing_failure(exc: BaseException) -> bool:
    """Errors that say the database is unavailable for now (connection lost or refused, locked,
    restarting), not that the request is wrong: a retry may succeed."""
    if isinstance(exc, sa_exc.OperationalError):
        return not any(lasting in str(exc).lower() for lasting in _LASTING)
    if isinstance(exc, StoreUnavailable | sa_exc.InterfaceError):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OSError | TimeoutError | sa_exc.DisconnectionError)


@contextlib.asynccontextmanager
async def _unavailable_as_port_error() -> AsyncIterator[None]:
    try:
        yield
    except StoreUnavailable:
        raise
    except Exception as exc:
        if is_passing_failure(exc):
            raise StoreUnavailable(f"{type(exc).__name__}: {str(exc)[:200]}") from exc
        raise


class SqlChatStore(PolicyStore, ClusterRows, ConversationRows, BrowseRows, UsageRows):
    """ChatStore on an AsyncEngine. Owns no engine lifecycle: the composition root disposes it.

    `owner` identifies this process in the rows it writes (a random id unless given).
    """

    def __init__(
        self, engine: AsyncEngine, *, write_window: float = 0.05, owner: str | None = None
    ) -> None:
        self._engine = engine
        self._owner = owner or uuid.uuid4().hex
        self._dialect = engine.dialect.name
        # SQLite has one writer: writers take turns in the event loop (see WriterTurns).
        self._turns = WriterTurns() if self._dialect == "sqlite" else None
        self._replies = WriteBehind(
            MESSAGES, partial(self._begin, priority=True), window=write_window
        )
        # Reply rows are created while every other reply streams: they take the flush's turn,
        # together, rather than queue one transaction each behind every flush.
        self._reply_rows: GroupCommit[dict[str, Any], int] = GroupCommit(
            partial(self._begin, priority=True), self._insert_reply_rows
        )
        self._inbound: GroupCommit[Inbound, StoredMessage | None] = GroupCommit(
            self._begin, self._accept_batch, passing=is_passing_failure
        )
        self._writes = 0

    @property
    def writes(self) -> int:
        """Rows written (inserted or updated); the benchmarks report writes per reply."""
        return self._writes + self._replies.rows_written

    @property
    def commits(self) -> int:
        return self._replies.commits

    @contextlib.asynccontextmanager
    async def _begin(self, *, priority: bool = False) -> AsyncIterator[AsyncConnection]:
        async with _unavailable_as_port_error():
            if self._turns is None:
                async with self._engine.begin() as conn:
                    yield conn
                return
            async with self._turns.turn(priority=priority), self._engine.begin() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        async with _unavailable_as_port_error(), self._engine.connect() as conn:
            yield conn

    async def close(self) -> None:
        await self._replies.close()

    @staticmethod
    def _stored(row: Any) -> StoredMessage:
        return _message(row)

    # --- chats -------------------------------------------------------------------------------

    async def get_or_create_chat(self, key: ChatKey) -> Chat:
        existing = await self.get_chat(key)
        if existing is not None:
            return existing
        async with self._begin() as conn:
            row = await self._ensure_chat(conn, key)
        return _chat(row)

    async def _ensure_chat(self, conn: AsyncConnection, key: ChatKey) -> Any:
        return (await self._ensure_chats(conn, [key]))[key]

    async def _ensure_chats(self, conn: AsyncConnection, keys: list[ChatKey]) -> dict[ChatKey, Any]:
        """Chat rows by location, creating the chats that do not exist yet.

        One statement whether the chats exist or not (a new Slack thread or Discord channel is the
        common case under load); an existing chat's updated_at becomes the last message's time.
        Another instance creating the same chat at the same moment is merged into one row.
        """
        ordered = sorted(set(keys), key=astuple)  # a fixed lock order (see _accept_batch)
        statement = self._insert(CHATS).values([_new_chat(key) for key in ordered])
        upsert = statement.on_conflict_do_update(
            index_elements=[CHATS.c.platform, CHATS.c.workspace, CHATS.c.channel, CHATS.c.thread],
            set_={"updated_at": statement.excluded.updated_at},
        ).returning(*CHATS.c)
        rows = await conn.execute(upsert)
        self._writes += len(ordered)
        return {ChatKey(r.platform, r.workspace, r.channel, r.thread): r for r in rows}

    async def get_chat(self, key: ChatKey) -> Chat | None:
        async with self._read() as conn:
            row = (await conn.execute(_chat_query(key))).first()
        return None if row is None else _chat(row)

    async def set_title(self, chat_id: int, title: str) -> None:
        await self._write(update(ChatRow).where(ChatRow.id == chat_id).values(title=title[:200]))

    async def reset_context(self, chat_id: int) -> None:
        await self._reset(CHATS.c.id == chat_id)

    async def reset_place(self, platform: str, workspace: str, channel: str) -> int:
        place = (CHATS.c.platform == platform, CHATS.c.workspace == workspace)
        return await self._reset(*place, CHATS.c.channel == channel)

    async def _reset(self, *chats: Any) -> int:
        """Each chat's context floor becomes its own newest message: one statement."""
        newest = select(func.max(MESSAGES.c.id)).where(MESSAGES.c.chat_id == CHATS.c.id)
        statement = (
            update(CHATS)
            .where(*chats)
            .values(context_floor=func.coalesce(newest.scalar_subquery(), 0), updated_at=utcnow())
        )
        async with self._begin() as conn:
            reset = int(getattr(await conn.execute(statement), "rowcount", 0) or 0)
        self._writes += reset
        return reset

    # --- inbound -----------------------------------------------------------------------------

    async def claim_event(self, platform: str, event_id: str) -> bool:
        async with self._begin() as conn:
            return bool(await self._claim(conn, [(platform, event_id)]))

    async def accept_inbound(
        self, platform: str, message: InboundMessage, metadata: dict[str, Any] | None = None
    ) -> StoredMessage | None:
        # The claim, the chat and the message in one transaction, shared with the other messages
        # that arrive while the database is busy (see GroupCommit).
        return await self._inbound.submit((platform, message, metadata))

    async def _accept_batch(
        self, conn: AsyncConnection, batch: list[Inbound]
    ) -> list[StoredMessage | None]:
        """Claim each event, ensure each chat and insert each message: three statements for the
        whole batch. Claims and chats are taken in sorted order, so two instances' batches never
        wait for each other in a cycle; messages go in arrival order (their ids are the
        conversation's order), behind their chat's row lock."""
        claimed = await self._claim(conn, [(platform, m.event_id) for platform, m, _ in batch])
        # A duplicate event (even within this batch) is answered once: by the first to claim it.
        owners: list[int] = []
        for index, (platform, message, _) in enumerate(batch):
            if (platform, message.event_id) in claimed:
                claimed.discard((platform, message.event_id))
                owners.append(index)
        if not owners:
            return [None] * len(batch)
        chats = await self._ensure_chats(conn, [batch[i][1].chat_key for i in owners])
        rows: list[dict[str, Any]] = []
        for index in owners:
            _, message, metadata = batch[index]
            # PENDING: an inbox entry until its reply ends (see mark_answered).
            values = _message_values(
                chats[message.chat_key].id,
                Role.USER,
                message.text,
                status=MessageStatus.PENDING,
                author_id=message.author_id,
                platform_message_ids=[message.platform_message_id],
                owner=self._owner,
            )
            values["meta"] = dict(metadata or {})
            if message.author_name:
                values["meta"]["author_name"] = message.author_name
            rows.append(values)
        inserted = await conn.execute(
            self._insert_ignore(MESSAGES)
            .values([_columns(values) for values in rows])
            .returning(MESSAGES.c.id, MESSAGES.c.chat_id, MESSAGES.c.platform_message_id)
        )
        ids = {(row.chat_id, row.platform_message_id): int(row.id) for row in inserted}
        self._writes += len(ids)
        results: list[StoredMessage | None] = [None] * len(batch)
        for index, values in zip(owners, rows, strict=True):
            # Same platform message under another event id (Slack's app_mention + message):
            # the claim stands, and the message is answered once.
            new_id = ids.pop((values["chat_id"], values["platform_message_id"]), None)
            if new_id is not None:
                results[index] = _message_from_values(new_id, values)
        return results

    async def _claim(
        self, conn: AsyncConnection, events: list[tuple[str, str]]
    ) -> set[tuple[str, str]]:
        """Claim (platform, event id) pairs; returns those this call claimed. Taken in sorted
        order, so two instances' batches never wait for each other in a cycle."""
        now = utcnow()
        statement = (
            self._insert_ignore(EVENTS)
            .values(
                [{"platform": p, "event_id": e, "claimed_at": now} for p, e in sorted(set(events))]
            )
            .returning(EVENTS.c.platform, EVENTS.c.event_id)
        )
        claimed = {(row.platform, row.event_id) for row in await conn.execute(statement)}
        self._writes += len(claimed)
        return claimed

    # --- messages ----------------------------------------------------------------------------

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
    ) -> StoredMessage:
        values = _message_values(
            chat_id,
            role,
            content,
            status=status,
            reply_to_id=reply_to_id,
            response_number=response_number,
            author_id=author_id,
            platform_message_ids=list(platform_message_ids),
            model=model,
            owner=self._owner,
        )
        new_id = await self._reply_rows.submit(_columns(values))
        return _message_from_values(new_id, values)

    async def _insert_reply_rows(
        self, conn: AsyncConnection, rows: list[dict[str, Any]]
    ) -> list[int]:
        # One executemany (every row has the columns of _message_values); RETURNING in parameter
        # order pairs each id with its row.
        statement = MESSAGES.insert().returning(MESSAGES.c.id, sort_by_parameter_order=True)
        ids = [int(new_id) for new_id in (await conn.execute(statement, rows)).scalars()]
        self._writes += len(ids)
        return ids

    async def save_reply(self, message_id: int, progress: ReplyProgress) -> None:
        values: dict[str, Any] = {
            "content": clean_text(progress.content),
            "status": progress.status.value,
            "updated_at": utcnow(),
        }
        if progress.platform_message_ids:
            ids = list(progress.platform_message_ids)
            values["platform_message_ids"] = ids
            values["platform_message_id"] = ids[0]
        if progress.error is not None:
            values["error"] = clean_text(progress.error)
        if progress.model is not None:
            values["model"] = progress.model
        if progress.usage is not None:
            values["prompt_tokens"] = progress.usage.prompt_tokens
            values["completion_tokens"] = progress.usage.completion_tokens
        if progress.metadata is not None:
            values["meta"] = progress.metadata
        await self._replies.save(message_id, _columns(values))

    async def add_tool_round(
        self, chat_id: int, reply_to_id: int, outcomes: Sequence[ToolOutcome], *, model: str
    ) -> None:
        """The round's rows are numbered after the reply's earlier rounds (`tool_step`), which
        orders them for `context_messages` whatever ids the database hands out; they share one
        timestamp, so retention never takes part of a round. A direct transaction, not the
        write-behind: the next request of the reply is sent with these rows stored."""
        if not outcomes:
            return
        calls = [
            {"id": clean_text(o.call.id), "name": clean_text(o.call.name),
             "arguments": clean_text(o.call.arguments)}
            for o in outcomes
        ]  # fmt: skip
        # The calls first, then one result per call, in call order.
        rows: list[tuple[Role, str, dict[str, Any]]] = [(Role.ASSISTANT, "", {"tool_calls": calls})]
        for outcome, call in zip(outcomes, calls, strict=True):
            result = {
                "tool_call_id": call["id"],
                "name": call["name"],
                "error": outcome.error,
                "seconds": outcome.seconds,
            }
            rows.append((Role.TOOL, outcome.content, result))
        last_step = select(func.coalesce(func.max(MESSAGES.c.tool_step), 0)).where(
            MESSAGES.c.reply_to_id == reply_to_id
        )
        # Priority, as the reply's own rows: its user waits for the round (see WriterTurns).
        async with self._begin(priority=True) as conn:
            step = int((await conn.execute(last_step)).scalar_one())
            now = utcnow()
            values = []
            for offset, (role, content, meta) in enumerate(rows, start=1):
                row = _message_values(
                    chat_id,
                    role,
                    content,
                    status=MessageStatus.COMPLETE,
                    reply_to_id=reply_to_id,
                    model=model,
                    owner=self._owner,
                )
                row.update(meta=meta, tool_step=step + offset, created_at=now, updated_at=now)
                values.append(_columns(row))
            await conn.execute(MESSAGES.insert(), values)
        self._writes += len(values)

    async def mark_answered(self, user_message_id: int) -> None:
        # With the reply's final save, in the same write-behind batch: no commit of its own.
        values = {"status": MessageStatus.COMPLETE.value, "updated_at": utcnow()}
        await self._replies.save(user_message_id, values)

    async def get_message(self, message_id: int) -> StoredMessage | None:
        async with self._read() as conn:
            row = (
                await conn.execute(_message_columns().where(MessageRow.id == message_id))
            ).first()
        return None if row is None else _message(row)

    async def messages(self, chat_id: int) -> list[StoredMessage]:
        """Every message of a chat in insertion order (inspection, tests, the sandbox)."""
        query = _message_columns().where(MessageRow.chat_id == chat_id).order_by(MessageRow.id)
        async with self._read() as conn:
            return [_message(row) for row in await conn.execute(query)]

    async def context_messages(self, chat: Chat, upto_id: int, limit: int) -> list[StoredMessage]:
        # A reply sorts right after the message it answers, even when later user messages were
        # stored before it finished (they were queued behind it); the reply's tool rounds sort
        # between the two, by step, though its row was created first. Messages their authors
        # deleted are left out here, so that every caller's prompt is without them, and so are
        # the tool rounds answering them. What answers a message below the context floor stays
        # below it (a reply or a round that ended after a /reset).
        position = func.coalesce(MessageRow.reply_to_id, MessageRow.id)
        tool_row = MessageRow.tool_step > 0
        phase = case((MessageRow.reply_to_id.is_(None), 0), (tool_row, 1), else_=2)
        answers_deleted = exists().where(
            _ANSWERED.c.id == MessageRow.reply_to_id,
            self._deleted(_ANSWERED.c["metadata"]),
        )
        query = (
            _message_columns()
            .where(
                MessageRow.chat_id == chat.id,
                MessageRow.id > chat.context_floor,
                position > chat.context_floor,
                position <= upto_id,
                MessageRow.response_number == 0,
                self._not_deleted(),
                # A round's calls have no text: the row is context all the same.
                or_(
                    tool_row,
                    MessageRow.role != Role.ASSISTANT.value,
                    and_(MessageRow.status.not_in(_UNFINISHED), MessageRow.content != ""),
                ),
                or_(~tool_row, ~answers_deleted),
            )
            .order_by(
                position.desc(), phase.desc(), MessageRow.tool_step.desc(), MessageRow.id.desc()
            )
            .limit(limit)
        )
        async with self._read() as conn:
            rows = list(await conn.execute(query))
        return [_message(row) for row in reversed(rows)]

    async def import_history(self, chat: Chat, entries: Sequence[HistoryEntry]) -> int:
        imported = 0
        async with self._begin() as conn:
            for entry in entries:
                values = _message_values(
                    chat.id,
                    entry.role,
                    entry.content,
                    status=MessageStatus.COMPLETE,
                    author_id=entry.author_id,
                    platform_message_ids=[entry.platform_message_id],
                )
                values["meta"] = {"imported": True}
                result = await conn.execute(
                    self._insert_ignore(MESSAGES)
                    .values(**_columns(values))
                    .returning(MESSAGES.c.id)
                )
                imported += result.first() is not None
            self._writes += 1
        return imported

    # --- owners ------------------------------------------------------------------------------

    @property
    def owner(self) -> str:
        return self._owner

    async def register_owner(self, host: str, pid: int) -> None:
        now = utcnow()
        row = {"id": self._owner, "host": host[:255], "pid": pid, "started_at": now}
        async with self._begin() as conn:
            await conn.execute(self._insert(OWNERS).values(**row, heartbeat_at=now))
        self._writes += 1

    async def heartbeat(self) -> None:
        # PostgreSQL's clock: instances on several hosts are judged alive by one clock.
        beat = func.now() if self._dialect == "postgresql" else utcnow()
        await self._write(
            update(OWNERS).where(OWNERS.c.id == self._owner).values(heartbeat_at=beat)
        )

    async def release_owner(self) -> None:
        await self._write(
            update(OWNERS).where(OWNERS.c.id == self._owner).values(stopped_at=utcnow())
        )

    async def owners(self) -> list[OwnerRecord]:
        async with self._read() as conn:
            rows = await conn.execute(select(OWNERS))
            return [
                OwnerRecord(
                    r.id,
                    r.host,
                    r.pid,
                    as_utc(r.heartbeat_at),
                    as_utc(r.stopped_at),
                )
                for r in rows
            ]

    async def orphans(
        self, owner_ids: Sequence[str], limit: int, after_id: int = 0
    ) -> list[Orphan]:
        if not owner_ids:
            return []
        waiting = (
            _message_columns()
            .add_columns(CHATS.c.platform, CHATS.c.workspace, CHATS.c.channel, CHATS.c.thread)
            .join(CHATS, CHATS.c.id == MESSAGES.c.chat_id)
            .where(
                MESSAGES.c.owner.in_(list(owner_ids)),
                MESSAGES.c.status == MessageStatus.PENDING.value,
                MESSAGES.c.role == Role.USER.value,
                MESSAGES.c.id > after_id,
            )
            .order_by(MESSAGES.c.id)
            .limit(limit)
        )
        async with self._read() as conn:
            users = list(await conn.execute(waiting))
            if not users:
                return []
            replies = await conn.execute(
                _message_columns()
                .where(
                    MESSAGES.c.reply_to_id.in_([u.id for u in users]),
                    MESSAGES.c.role == Role.ASSISTANT.value,
                    MESSAGES.c.tool_step == 0,  # a round's calls are no reply to adopt
                )
                .order_by(MESSAGES.c.id)
            )
            by_user: dict[int, list[StoredMessage]] = {}
            for row in replies:
                by_user.setdefault(row.reply_to_id, []).append(_message(row))
        return [
            Orphan(
                chat=ChatKey(u.platform, u.workspace, u.channel, u.thread),
                user_message=_message(u),
                owner=u.owner,
                replies=tuple(by_user.get(u.id, ())),
            )
            for u in users
        ]

    async def take_over(self, message_ids: Sequence[int], from_owner: str) -> set[int]:
        """The first id is the user message: nothing is taken unless it is still waiting (a
        reply that ended meanwhile is not settled again); then the rest go with it."""
        if not message_ids:
            return set()
        user_id, *rest = message_ids
        moved = (
            update(MESSAGES)
            .where(MESSAGES.c.owner == from_owner)
            .values(owner=self._owner)
            .returning(MESSAGES.c.id)
        )
        async with self._begin() as conn:
            waiting = moved.where(
                MESSAGES.c.id == user_id, MESSAGES.c.status == MessageStatus.PENDING.value
            )
            taken = {int(row.id) for row in await conn.execute(waiting)}
            if taken and rest:
                replies = moved.where(MESSAGES.c.id.in_(rest))
                taken |= {int(row.id) for row in await conn.execute(replies)}
        self._writes += len(taken)
        return taken

    async def forget_owner(self, owner_id: str) -> bool:
        unfinished = exists().where(
            MESSAGES.c.owner == owner_id,
            MESSAGES.c.status.in_([s.value for s in MessageStatus if not s.finished]),
        )
        async with self._begin() as conn:
            result = await conn.execute(delete(OWNERS).where(OWNERS.c.id == owner_id, ~unfinished))
        return bool(getattr(result, "rowcount", 0))

    # --- retention -----------------------------------------------------------------------------

    async def prune_events(self, older_than_seconds: float) -> int:
        cutoff = utcnow() - timedelta(seconds=older_than_seconds)
        async with self._begin() as conn:
            result = await conn.execute(
                delete(ProcessedEventRow).where(ProcessedEventRow.claimed_at < cutoff)
            )
            self._writes += 1
        # Events queued for a lease that nobody took in all that time go too (their text).
        stale = await self.prune_handoffs(older_than_seconds)
        return int(getattr(result, "rowcount", 0) or 0) + stale

    async def prune_messages(self, older_than_seconds: float) -> int:
        """Finished messages older than the cutoff go (their votes with them: ON DELETE CASCADE,
        which SQLite enforces with the foreign_keys pragma of `create_engine`), and chats left
        with none (their settings and titles too), and the token counts of the days before.
        Unfinished ones stay: they are still someone's inbox. A reply's tool rounds go by the
        same rule: written before their user message and their reply were last written (both
        settle when the reply ends), they never outlive them; a round goes whole (one time)."""
        cutoff = utcnow() - timedelta(seconds=older_than_seconds)
        async with self._begin() as conn:
            result = await conn.execute(
                delete(MESSAGES).where(
                    MESSAGES.c.updated_at < cutoff, MESSAGES.c.status.in_(_FINISHED)
                )
            )
            await conn.execute(
                delete(CHATS).where(
                    CHATS.c.updated_at < cutoff,
                    ~exists().where(MESSAGES.c.chat_id == CHATS.c.id),
                )
            )
            await self._prune_usage(conn, cutoff.date())
            self._writes += 1
        return int(getattr(result, "rowcount", 0) or 0)

    # --- helpers -----------------------------------------------------------------------------

    def _insert(self, table: Table) -> Any:
        """The dialect's INSERT, which has ON CONFLICT (on the Core table: the ORM's bulk path
        costs more CPU per statement than the statement itself)."""
        insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        return insert(table)

    def _insert_ignore(self, table: Table) -> Any:
        return self._insert(table).on_conflict_do_nothing()

    async def _write(self, statement: Any) -> None:
        async with self._begin() as conn:
            await conn.execute(statement)
        self._writes += 1


def _chat_query(key: ChatKey) -> Select[Any]:
    return select(ChatRow).where(
        ChatRow.platform == key.platform,
        ChatRow.workspace == key.workspace,
        ChatRow.channel == key.channel,
        ChatRow.thread == key.thread,
    )


def _new_chat(key: ChatKey) -> dict[str, Any]:
    now = utcnow()
    return {
        "platform": key.platform,
        "workspace": key.workspace,
        "channel": key.channel,
        "thread": key.thread,
        "settings": {},
        "context_floor": 0,
        "created_at": now,
        "updated_at": now,
    }


def _chat(row: Any) -> Chat:
    return Chat(
        id=row.id,
        key=ChatKey(row.platform, row.workspace, row.channel, row.thread),
        title=row.title,
        settings=dict(row.settings or {}),
        context_floor=row.context_floor,
    )


def _message_values(
    chat_id: int,
    role: Role,
    content: str,
    *,
    status: MessageStatus,
    reply_to_id: int | None = None,
    response_number: int = 0,
    author_id: str | None = None,
    platform_message_ids: list[str] | None = None,
    model: str | None = None,
    owner: str | None = None,
) -> dict[str, Any]:
    ids = platform_message_ids or []
    now = utcnow()
    return {
        "chat_id": chat_id,
        "role": role.value,
        # The store is the last boundary before the database: PostgreSQL refuses NUL in text,
        # sqlite3 a lone surrogate. Adapters clean their text too; this keeps a bad row out.
        "content": clean_text(content),
        "author_id": author_id,
        "platform_message_id": ids[0] if ids else None,
        "platform_message_ids": ids,
        "reply_to_id": reply_to_id,
        "response_number": response_number,
        "status": status.value,
        "model": model,
        "owner": owner,
        "meta": {},
        "created_at": now,
        "updated_at": now,
    }


def _message_from_values(message_id: int, values: dict[str, Any]) -> StoredMessage:
    return StoredMessage(
        id=message_id,
        chat_id=values["chat_id"],
        role=Role(values["role"]),
        content=values["content"],
        status=MessageStatus(values["status"]),
        author_id=values["author_id"],
        platform_message_ids=tuple(values["platform_message_ids"]),
        response_number=values["response_number"],
        reply_to_id=values["reply_to_id"],
        model=values["model"],
        metadata=dict(values["meta"]),
        created_at=values["created_at"],
    )


def _columns(values: dict[str, Any]) -> dict[str, Any]:
    """ORM attribute names to column names (only `meta` differs)."""
    out = dict(values)
    if "meta" in out:
        out["metadata"] = out.pop("meta")
    return out


def _message_columns() -> Select[Any]:
    return select(MESSAGES)


def _message(row: Any) -> StoredMessage:
    usage = None
    if row.prompt_tokens is not None or row.completion_tokens is not None:
        usage = TokenUsage(row.prompt_tokens or 0, row.completion_tokens or 0)
    created = as_utc(row.created_at)
    return StoredMessage(
        id=row.id,
        chat_id=row.chat_id,
        role=Role(row.role),
        content=row.content,
        status=MessageStatus(row.status),
        author_id=row.author_id,
        platform_message_ids=tuple(row.platform_message_ids or ()),
        response_number=row.response_number,
        reply_to_id=row.reply_to_id,
        error=row.error,
        model=row.model,
        usage=usage,
        metadata=dict(row._mapping["metadata"] or {}),
        created_at=created,
    )
