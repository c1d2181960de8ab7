"""The `UsageBrowser` port on SQL: tokens, replies, failed replies and 429s per day, the biggest
channels and users of a range of days, and who is near their daily quota. Read-only; mixed into
`SqlChatStore`, whose connections it uses.

Everything is read from `token_usage`, the daily counters `add_usage` keeps for the quotas (a row
per day and user, channel or platform), through `ix_token_usage_scope_day`, which holds every
column the sums need: a page reads the rows of its days and scope, however many messages are
stored, and never the table itself. The one exception is
the failed replies of days counted before replies' outcomes were (revision 0008): those are
counted from the messages' status, through the partial index `ix_messages_failed_replies` (the
failed replies of those days, nothing else), and stop being read once the range starts on a
counted day.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast

from sqlalchemy import Date, Table, func, literal, literal_column, select, text, type_coerce
from sqlalchemy import cast as sql_cast
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.ports import (
    QuotaLine,
    QuotaState,
    UsageDay,
    UsageRange,
    UsageSummary,
    UsageTotal,
)
from storage.models import FAILED_REPLIES, ChatRow, MessageRow, TokenUsageRow
from storage.parts import StoreParts

_USAGE = cast(Table, TokenUsageRow.__table__)
_MESSAGES = cast(Table, MessageRow.__table__)
_CHATS = cast(Table, ChatRow.__table__)
MAX_TOP = 10_000


class UsageRows(StoreParts):
    async def usage(self, where: UsageRange, *, top: int = 20) -> UsageSummary:
        top = max(1, min(top, MAX_TOP))
        async with self._read() as conn:
            counted = await self._daily(conn, where)
            platform_days = await self._platform_days(conn, where)
            counted_since = min((day for day, _ in platform_days), default=None)
            guessed: dict[tuple[date, str], int] = {}
            if counted_since is None or counted_since > where.since:
                before = counted_since or where.until + timedelta(days=1)
                guessed = await self._failed_replies(conn, where, before)
            channels, channel_count = await self._biggest(conn, where, "channel", top)
            users, user_count = await self._biggest(conn, where, "user", top)
        days = []
        for key in sorted(set(counted) | set(platform_days) | set(guessed)):
            day, platform = key
            tokens, replies = counted.get(key, (0, 0))
            if counted_since is not None and day >= counted_since:
                failed, rate_limited = platform_days.get(key, (0, 0))
                days.append(UsageDay(day, platform, tokens, replies, failed, rate_limited))
            else:
                days.append(UsageDay(day, platform, tokens, replies, guessed.get(key, 0), None))
        return UsageSummary(
            days=tuple(days),
            channels=channels,
            users=users,
            channel_count=channel_count,
            user_count=user_count,
            counted_since=counted_since,
        )

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
        found: dict[str, tuple[tuple[QuotaLine, ...], int]] = {}
        async with self._read() as conn:
            for scope, quota in (("user", user_quota), ("channel", channel_quota)):
                found[scope] = await self._near(conn, day, scope, quota, platform, near, limit)
        (users, user_count), (channels, channel_count) = found["user"], found["channel"]
        return QuotaState(day, near, users, channels, user_count, channel_count)

    # --- the queries ---------------------------------------------------------------------------

    async def _daily(
        self, conn: AsyncConnection, where: UsageRange
    ) -> dict[tuple[date, str], tuple[int, int]]:
        """(tokens, replies) per day and platform: the sum of its channels' rows (each reply is
        counted once per scope; a day has fewer channels than users)."""
        u = _USAGE
        query = (
            select(u.c.day, u.c.platform, func.sum(u.c.tokens), func.sum(u.c.replies))
            .where(*_in_range(where), u.c.scope == "channel")
            .group_by(u.c.day, u.c.platform)
        )
        rows = await conn.execute(query)
        return {(_day(day), platform): (int(t), int(r)) for day, platform, t, r in rows}

    async def _platform_days(
        self, conn: AsyncConnection, where: UsageRange
    ) -> dict[tuple[date, str], tuple[int, int]]:
        """(failed, 429s) per day and platform, where replies' outcomes were counted."""
        u = _USAGE
        query = select(u.c.day, u.c.platform, u.c.failed, u.c.rate_limited).where(
            *_in_range(where), u.c.scope == "platform"
        )
        rows = await conn.execute(query)
        return {(_day(day), platform): (int(f), int(r)) for day, platform, f, r in rows}

    async def _failed_replies(
        self, conn: AsyncConnection, where: UsageRange, before: date
    ) -> dict[tuple[date, str], int]:
        """Failed replies per day and platform from `where.since` to `before`, from the
        messages' status (days whose outcomes were not counted)."""
        m, c = _MESSAGES, _CHATS
        start, stop = _midnight(where.since), _midnight(min(before, where.until + timedelta(1)))
        moment = m.c.updated_at.type
        if self._dialect == "postgresql":
            utc = func.timezone(literal_column("'UTC'"), m.c.updated_at)
            day: Any = sql_cast(utc, Date)
        else:  # SQLite keeps UTC times as text: their date is their first ten characters
            day = type_coerce(func.date(m.c.updated_at), Date)
        day = day.label("day")
        query = (
            select(day, c.c.platform, func.count())
            .select_from(m.join(c, c.c.id == m.c.chat_id))
            .where(
                # Its first message only: a reply of several choices counts once.
                text(FAILED_REPLIES),
                m.c.updated_at >= literal(start, type_=moment),
                m.c.updated_at < literal(stop, type_=moment),
            )
            .group_by(day, c.c.platform)
        )
        if where.platform:
            query = query.where(c.c.platform == where.platform)
        rows = await conn.execute(query)
        return {(_day(found), platform): int(n) for found, platform, n in rows}

    async def _biggest(
        self, conn: AsyncConnection, where: UsageRange, scope: str, top: int
    ) -> tuple[tuple[UsageTotal, ...], int]:
        """The `top` biggest keys of a scope over the range, and how many it has in all."""
        u = _USAGE
        tokens = func.sum(u.c.tokens).label("tokens")
        query = (
            select(u.c.platform, u.c.key, tokens, func.sum(u.c.replies), func.count().over())
            .where(*_in_range(where), u.c.scope == scope)
            .group_by(u.c.platform, u.c.key)
            .order_by(tokens.desc(), u.c.platform, u.c.key)
            .limit(top)
        )
        rows = list(await conn.execute(query))
        totals = tuple(UsageTotal(p, key, int(t), int(r)) for p, key, t, r, _ in rows)
        return totals, int(rows[0][4]) if rows else 0

    async def _near(
        self,
        conn: AsyncConnection,
        day: date,
        scope: str,
        quota: int,
        platform: str | None,
        near: float,
        limit: int,
    ) -> tuple[tuple[QuotaLine, ...], int]:
        if quota <= 0:
            return (), 0
        u = _USAGE
        # The primary key's (day, scope) prefix: today's rows of the scope only.
        query = (
            select(u.c.platform, u.c.key, u.c.tokens, func.count().over())
            .where(
                u.c.day == day,
                u.c.scope == scope,
                u.c.tokens >= max(1, math.ceil(quota * near)),
            )
            .order_by(u.c.tokens.desc(), u.c.platform, u.c.key)
            .limit(max(1, limit))
        )
        if platform:
            query = query.where(u.c.platform == platform)
        rows = list(await conn.execute(query))
        lines = tuple(QuotaLine(p, key, int(tokens), quota) for p, key, tokens, _ in rows)
        return lines, int(rows[0][3]) if rows else 0


def _in_range(where: UsageRange) -> list[Any]:
    u = _USAGE
    conditions = [u.c.day >= where.since, u.c.day <= where.until]
    if where.platform:
        conditions.append(u.c.platform == where.platform)
    return conditions


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _day(value: Any) -> date:
    """A Date column's value (SQLite through a function: its text)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))
