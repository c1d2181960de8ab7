"""The `ConversationBrowser` port on SQL: conversations listed with filters and keyset paging,
and one conversation in its order. Read-only; mixed into `SqlChatStore`, whose connections it uses.

A page is one indexed walk of `chats` by (updated_at, id), newest first, stopped after `limit`
rows; what is shown of each conversation (its count, its last reply's status) is read for the
page's conversations only. Never OFFSET: a later page costs what the first does.

A text search (`ChatFilter.text`) of three characters or more finds its conversations through
revision 0011's index of finished messages when the text is rare enough for the index to be the
faster way; otherwise it is checked conversation by conversation along the walk, which stops
once a page matched (docs/console.md, "Text search").
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Select,
    Table,
    case,
    exists,
    func,
    literal,
    literal_column,
    select,
    tablesample,
    tuple_,
)
from sqlalchemy import table as text_table
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.domain import ChatKey, MessageStatus, Role
from bridge.ports import ChatCursor, ChatFilter, ChatPage, ChatSummary, ChatThread
from storage.models import ChatRow, MessageRow, as_utc
from storage.parts import StoreParts

_CHATS = cast(Table, ChatRow.__table__)
_MESSAGES = cast(Table, MessageRow.__table__)
MAX_PAGE = 200
# Revision 0011's index of finished messages' text, where the database could have it: SQLite's
# FTS5 table, PostgreSQL's partial pg_trgm index on `messages`.
SEARCH_INDEX = {"sqlite": "messages_search", "postgresql": "ix_messages_content_trgm"}
# Trigrams: a shorter text cannot use the index, and is searched by the walk.
INDEXED_LENGTH = 3
# SQLite: a text in more messages than this is searched by the walk (measured at a million
# messages in docs/benchmarks.md section 10).
INDEX_AT_MOST = 2000
# PostgreSQL: a text found this many times in a sample of SAMPLE_PERCENT % of the table's pages
# (about 5,000 messages of a million) is searched by the walk.
SAMPLE_PERCENT = 0.5
SAMPLE_COMMON = 3


class BrowseRows(StoreParts):
    async def browse(
        self, where: ChatFilter, *, after: ChatCursor | None = None, limit: int = 50
    ) -> ChatPage:
        limit = max(1, min(limit, MAX_PAGE))
        if where.text and "\x00" in where.text:
            # No stored message holds a NUL (clean_text); PostgreSQL refuses one in any text,
            # and FTS5's query text would end at it.
            return ChatPage((), None)
        async with self._read() as conn:
            searched = None
            text = where.text or ""
            if len(text) >= INDEXED_LENGTH and await self._has_search_index(conn):
                searched = await self._searched(conn, text)
            query = _matching(where, searched)
            if after is not None:
                moment = literal(after.last_activity, type_=_CHATS.c.updated_at.type)
                query = query.where(
                    tuple_(_CHATS.c.updated_at, _CHATS.c.id)
                    < tuple_(moment, literal(after.chat_id))
                )
            query = query.order_by(_CHATS.c.updated_at.desc(), _CHATS.c.id.desc())
            rows = list(await conn.execute(query.limit(limit + 1)))
            more = len(rows) > limit
            rows = rows[:limit]
            counts, statuses = await _shown_of(conn, [int(row.id) for row in rows])
        chats = tuple(
            _summary(row, counts.get(int(row.id), 0), statuses.get(int(row.id))) for row in rows
        )
        last = chats[-1] if chats and more else None
        cursor = None if last is None else ChatCursor(last.last_activity, last.id)
        return ChatPage(chats, cursor)

    async def _has_search_index(self, conn: AsyncConnection) -> bool:
        """Whether revision 0011 could make the search index here (asked once per store)."""
        known: bool | None = getattr(self, "_search_index", None)
        if known is None:
            name: Any = literal_column("indexname" if self._dialect == "postgresql" else "name")
            catalog = "pg_indexes" if self._dialect == "postgresql" else "sqlite_master"
            found: Any = await conn.execute(
                select(name)
                .select_from(text_table(catalog))
                .where(name == SEARCH_INDEX[self._dialect])
            )
            known = found.first() is not None
            self._search_index = known
        return known

    async def _searched(self, conn: AsyncConnection, text: str) -> Select[Any] | None:
        """The conversations with a finished message containing `text` (any case, three
        characters or more), found through revision 0011's index; None when the walk is the
        faster way (SQLite: a text in more than `INDEX_AT_MOST` messages)."""
        m = _MESSAGES
        finished = m.c.status != MessageStatus.STREAMING.value  # what the index holds
        if self._dialect == "postgresql":
            # ILIKE on the column itself: what pg_trgm's operator class answers. Its candidates
            # are the messages holding every trigram of the text anywhere: for common words
            # side by side ("the cache"), most of the table, rechecked one by one (1.8 s at a
            # million messages), where the walk finds a page at once. The planner cannot tell
            # (it guessed 98 rows for 173,893 candidates), so a sample of the table does: a
            # text found in it is common enough for the walk.
            pattern = "%" + _escaped(text) + "%"
            matches = m.c.content.ilike(pattern, escape="\\")
            sampled = tablesample(_MESSAGES, func.system(SAMPLE_PERCENT))
            probe = select(func.count()).select_from(
                select(literal_column("1"))
                .select_from(sampled)
                .where(sampled.c.status != MessageStatus.STREAMING.value)
                .where(sampled.c.content.ilike(pattern, escape="\\"))
                .limit(SAMPLE_COMMON)
                .subquery()
            )
            if int((await conn.execute(probe)).scalar_one()) >= SAMPLE_COMMON:
                return None
            return select(m.c.chat_id).where(finished, matches)
        # The trigram tokenizer answers a phrase as a substring of three characters or more, in
        # any case. SQLite has no statistics for it: the first hits are read, and a text found
        # in more messages than that is left to the walk (common: it stops after a page of
        # conversations; through the index, "the" costs 0.7 s at a million messages).
        phrase = '"' + text.replace('"', '""') + '"'
        table = SEARCH_INDEX["sqlite"]
        hits: Any = await conn.execute(
            select(literal_column("rowid"))
            .select_from(text_table(table))
            .where(literal_column(table).op("MATCH")(phrase))
            .limit(INDEX_AT_MOST + 1)
        )
        ids = [int(rowid) for (rowid,) in hits]
        if len(ids) > INDEX_AT_MOST:
            return None
        # LIKE keeps exactly what the walk would find (SQLite's lower() folds ASCII only).
        return select(m.c.chat_id).where(
            m.c.id.in_(ids), finished, m.c.content.icontains(text, autoescape=True)
        )

    async def conversation(self, chat_id: int, *, limit: int = 500) -> ChatThread | None:
        m = _MESSAGES
        # As in `context_messages`: a question, then its reply's tool rounds by step, then its
        # reply (which was created before the rounds, so ids alone would misplace it).
        position = func.coalesce(m.c.reply_to_id, m.c.id)
        phase = case((m.c.reply_to_id.is_(None), 0), (m.c.tool_step > 0, 1), else_=2)
        newest = (
            select(m)
            .where(m.c.chat_id == chat_id)
            .order_by(position.desc(), phase.desc(), m.c.tool_step.desc(), m.c.id.desc())
            .limit(max(1, limit))
        )
        async with self._read() as conn:
            chat = (await conn.execute(select(_CHATS).where(_CHATS.c.id == chat_id))).first()
            if chat is None:
                return None
            rows = list(await conn.execute(newest))
            total = (
                await conn.execute(select(func.count()).where(m.c.chat_id == chat_id))
            ).scalar_one()
            counts, statuses = await _shown_of(conn, [chat_id])
        messages = tuple(self._stored(row) for row in reversed(rows))
        summary = _summary(chat, counts.get(chat_id, 0), statuses.get(chat_id))
        return ChatThread(summary, messages, earlier=max(0, int(total) - len(messages)))


def _matching(where: ChatFilter, searched: Select[Any] | None) -> Select[Any]:
    c, m = _CHATS, _MESSAGES
    query = select(c.c.id, c.c.platform, c.c.workspace, c.c.channel, c.c.thread, c.c.title,
                   c.c.updated_at)  # fmt: skip
    for column, value in (
        (c.c.platform, where.platform),
        (c.c.workspace, where.workspace),
        (c.c.channel, where.channel),
    ):
        if value:
            query = query.where(column == value)
    if where.since is not None:
        query = query.where(c.c.updated_at >= _moment(where.since))
    if where.until is not None:
        query = query.where(c.c.updated_at < _moment(where.until))
    if where.user:
        # ix_messages_author_id_chat_id: a user's conversations without reading the others'.
        query = query.where(
            exists().where(
                m.c.author_id == where.user, m.c.chat_id == c.c.id, m.c.role == Role.USER.value
            )
        )
    if where.status is not None:
        query = query.where(
            exists().where(
                m.c.chat_id == c.c.id,
                m.c.role == Role.ASSISTANT.value,
                m.c.tool_step == 0,
                m.c.status == where.status.value,
            )
        )
    if searched is not None:
        query = query.where(c.c.id.in_(searched))
    elif where.text:
        # Walked with the conversations, stopped once a page matched: fast for a common word,
        # a read of every message for a rare one (hence the index of `_searched`). OFFSET 0
        # keeps it a probe of each conversation's messages: PostgreSQL would otherwise make it
        # a join and read every message first (1.9 s against 74 ms for "the cache").
        found: Select[Any] = (
            select(literal_column("1"))
            .where(
                m.c.chat_id == c.c.id,
                m.c.status != MessageStatus.STREAMING.value,  # as the index: finished text
                m.c.content.icontains(where.text, autoescape=True),
            )
            .offset(0)
        )
        query = query.where(found.exists())
    return query


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _moment(value: datetime) -> Any:
    return literal(value, type_=_CHATS.c.updated_at.type)


async def _shown_of(
    conn: Any, chat_ids: list[int]
) -> tuple[dict[int, int], dict[int, MessageStatus]]:
    """Per conversation: its messages (tool rounds not counted) and its last reply's status."""
    if not chat_ids:
        return {}, {}
    m = _MESSAGES
    counted = (
        select(m.c.chat_id, func.count())
        .where(m.c.chat_id.in_(chat_ids), m.c.tool_step == 0)
        .group_by(m.c.chat_id)
    )
    counts = {int(chat): int(n) for chat, n in await conn.execute(counted)}
    # The newest reply of each: found by walking ix_messages_chat_id_id backwards, per chat.
    last_reply = (
        select(m.c.status)
        .where(m.c.chat_id == _CHATS.c.id, m.c.role == Role.ASSISTANT.value, m.c.tool_step == 0)
        .order_by(m.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    found = await conn.execute(
        select(_CHATS.c.id, last_reply.label("status")).where(_CHATS.c.id.in_(chat_ids))
    )
    statuses = {int(row.id): MessageStatus(row.status) for row in found if row.status is not None}
    return counts, statuses


def _summary(row: Any, messages: int, status: MessageStatus | None) -> ChatSummary:
    return ChatSummary(
        id=int(row.id),
        key=ChatKey(row.platform, row.workspace, row.channel, row.thread),
        title=row.title,
        messages=messages,
        last_activity=as_utc(row.updated_at),
        last_reply_status=status,
    )
