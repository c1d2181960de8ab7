"""What users do to a conversation after the fact, behind the ChatStore port: messages found by
their platform id, edited or deleted by their authors, metadata added later (attachments), and
votes on replies. Mixed into `SqlChatStore`, whose connections and writers it uses.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, delete, exists, func, literal, not_, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.domain import ChatKey, Role, StoredMessage
from bridge.text import clean_text
from storage.models import ChatRow, FeedbackVoteRow, MessageRow, utcnow
from storage.parts import StoreParts

_MESSAGES = cast(Table, MessageRow.__table__)
_CHATS = cast(Table, ChatRow.__table__)
VOTES = cast(Table, FeedbackVoteRow.__table__)
# `metadata` is also an attribute of a table's column collection: the column is looked up by name.
_METADATA = _MESSAGES.c["metadata"]
VOTE_VALUES = ("up", "down")
# A reply continued into several platform messages is found by any of them among the chat's
# newest replies this many; older ones are found by their first message only.
CONTINUATIONS_SEARCHED = 200


class ConversationRows(StoreParts):
    """Each write is one short transaction; metadata is merged under a row lock (PostgreSQL), so
    two writers adding different keys of one message at once both keep theirs."""

    # --- finding and changing messages ---------------------------------------------------------

    async def find_message(self, key: ChatKey, platform_message_id: str) -> StoredMessage | None:
        direct = (
            select(_CHATS.c.id.label("found_chat_id"), _MESSAGES)
            .select_from(
                _CHATS.outerjoin(
                    _MESSAGES,
                    (_MESSAGES.c.chat_id == _CHATS.c.id)
                    & (_MESSAGES.c.platform_message_id == platform_message_id),
                )
            )
            .where(
                _CHATS.c.platform == key.platform,
                _CHATS.c.workspace == key.workspace,
                _CHATS.c.channel == key.channel,
                _CHATS.c.thread == key.thread,
            )
        )
        async with self._read() as conn:
            found = (await conn.execute(direct)).first()
            if found is None:
                return None  # the bridge never took part in that chat
            if found.id is not None:
                return self._stored(found)
            row = (
                await conn.execute(self._continued(found.found_chat_id, platform_message_id))
            ).first()
        return None if row is None else self._stored(row)

    def _continued(self, chat_id: int, platform_message_id: str) -> Any:
        """The newest of the chat's recent replies that lists `platform_message_id`."""
        recent = (
            select(_MESSAGES.c.id, _MESSAGES.c.platform_message_ids)
            .where(
                _MESSAGES.c.chat_id == chat_id,
                _MESSAGES.c.role == Role.ASSISTANT.value,
                _MESSAGES.c.tool_step == 0,  # a tool round's calls are never on the platform
            )
            .order_by(_MESSAGES.c.id.desc())
            .limit(CONTINUATIONS_SEARCHED)
            .subquery()
        )
        ids = recent.c.platform_message_ids
        if self._dialect == "postgresql":
            listed = sql_cast(ids, JSONB).contains([platform_message_id])
        else:
            each = func.json_each(ids).table_valued("value")
            listed = exists(select(literal(1)).where(each.c.value == platform_message_id))
        match = select(recent.c.id).where(listed).order_by(recent.c.id.desc()).limit(1)
        return select(_MESSAGES).where(_MESSAGES.c.id == match.scalar_subquery())

    async def update_metadata(self, message_id: int, values: dict[str, Any]) -> None:
        """Set these keys (the others stay); a message that is gone (retention) is left alone.

        Not for a reply while it streams: its progress saves write its whole metadata."""
        async with self._begin() as conn:
            current = await self._locked_metadata(conn, message_id)
            if current is None:
                return
            await conn.execute(
                update(_MESSAGES)
                .where(_MESSAGES.c.id == message_id)
                .values({_METADATA: {**current, **values}})
            )
        self._writes += 1

    async def edit_message(self, message_id: int, content: str, *, deleted: bool = False) -> None:
        """The new text with `edited_at` (ISO, UTC) and, deleted, `deleted: true` in the
        metadata; `context_messages` leaves deleted messages out."""
        marks: dict[str, Any] = {"edited_at": datetime.now(UTC).isoformat()}
        if deleted:
            marks["deleted"] = True
        async with self._begin() as conn:
            current = await self._locked_metadata(conn, message_id)
            if current is None:
                return
            await conn.execute(
                update(_MESSAGES)
                .where(_MESSAGES.c.id == message_id)
                .values({_MESSAGES.c.content: clean_text(content), _METADATA: {**current, **marks}})
            )
        self._writes += 1

    async def _locked_metadata(
        self, conn: AsyncConnection, message_id: int
    ) -> dict[str, Any] | None:
        # FOR UPDATE: a concurrent merge into the same row waits for this transaction and then
        # reads what it wrote. SQLite has no row locks and its driver begins a transaction only
        # at the first write: a write first takes the database's one write lock, so another
        # process's merge cannot land between this read and this write.
        if self._dialect == "sqlite":
            await conn.execute(
                update(_MESSAGES).where(_MESSAGES.c.id == message_id).values({_METADATA: _METADATA})
            )
        query = select(_METADATA).where(_MESSAGES.c.id == message_id).with_for_update()
        row = (await conn.execute(query)).first()
        return None if row is None else dict(row[0] or {})

    def _not_deleted(self) -> Any:
        """The condition that keeps messages their authors deleted out of prompts."""
        return self._deleted(_METADATA, negate=True)

    def _deleted(self, metadata: Any, *, negate: bool = False) -> Any:
        """True for a message its author deleted (`metadata`: the column, of any alias of the
        table); never NULL."""
        if self._dialect == "postgresql":
            marked = sql_cast(metadata, JSONB).contains({"deleted": True})
            return not_(marked) if negate else marked
        # json_extract reads JSON true as 1; a missing key as NULL, which IS NOT 1. Negated here,
        # not with not_(): SQLAlchemy drops the negation of `IS 1`.
        flag = func.json_extract(metadata, "$.deleted")
        return flag.is_not(1) if negate else flag.is_(1)

    # --- votes ---------------------------------------------------------------------------------

    async def record_vote(self, message_id: int, user: str, value: str | None) -> bool:
        """False when nothing changed: the same vote again, taking back a vote never given, or
        a vote on a message that is gone."""
        if value is not None and value not in VOTE_VALUES:
            raise ValueError(f"a vote is 'up', 'down' or None, not {value!r}")
        user = user[:64]
        mine = (VOTES.c.message_id == message_id) & (VOTES.c.user_id == user)
        if value is None:
            statement: Any = delete(VOTES).where(mine).returning(VOTES.c.message_id)
        else:
            insert = self._insert(VOTES).values(
                message_id=message_id, user_id=user, value=value, updated_at=utcnow()
            )
            statement = insert.on_conflict_do_update(
                index_elements=[VOTES.c.message_id, VOTES.c.user_id],
                set_={"value": insert.excluded.value, "updated_at": insert.excluded.updated_at},
                where=VOTES.c.value != insert.excluded.value,
            ).returning(VOTES.c.message_id)
        try:
            async with self._begin() as conn:
                changed = (await conn.execute(statement)).first() is not None
        except IntegrityError:  # the message is gone (retention) or never was
            return False
        self._writes += changed
        return changed

    async def votes(self, message_id: int) -> dict[str, str]:
        query = select(VOTES.c.user_id, VOTES.c.value).where(VOTES.c.message_id == message_id)
        async with self._read() as conn:
            return {row.user_id: row.value for row in await conn.execute(query)}

    async def vote_totals(self) -> dict[str, dict[str, int]]:
        """Votes counted by platform and value, for `/metrics`: {"slack": {"up": 3, "down": 1}};
        a platform without votes is absent."""
        query = (
            select(_CHATS.c.platform, VOTES.c.value, func.count().label("n"))
            .select_from(
                VOTES.join(_MESSAGES, _MESSAGES.c.id == VOTES.c.message_id).join(
                    _CHATS, _CHATS.c.id == _MESSAGES.c.chat_id
                )
            )
            .group_by(_CHATS.c.platform, VOTES.c.value)
        )
        totals: dict[str, dict[str, int]] = {}
        async with self._read() as conn:
            for row in await conn.execute(query):
                counts = totals.setdefault(row.platform, dict.fromkeys(VOTE_VALUES, 0))
                counts[row.value] = int(row.n)
        return totals
