"""The `UsageBrowser` port on SQL: tokens, replies, failed replies and 429s per day, the biggest
channels and users of a range of days, and who is near their daily quota. Read-only; mixed into
`SqlChatStore`, whose connections it uses.

Everything is read from `token_usage`, the daily counters `add_usage` keeps for the quotas (a row
per day and user, channel or platform), through `ix_token_usage_scope_day`, which holds every
column the sums need: a page reads the rows of its days and scope, however many messages are
stored, and never the table itself. The biggest channels and users of a range are summed from
`token_usage_months` for its whole months (a row per month and user or channel, which the
database keeps equal to the sum of its days: revision 0010's triggers) and from the daily rows
for the edge days only (`_parts`: an edge month is its monthly row less its days outside the
range when that reads fewer rows than its days inside). At the benchmark's million messages a
90-day ranking of users sums about 15,600 rows instead of 96,000. Retention deletes daily rows
and, with them, their share of their months: a range reaching before it shows what the daily
rows still hold, as before.

The one exception to the counters is the failed replies of days counted before replies'
outcomes were (revision 0008): those are counted from the messages' status, through the partial
index `ix_messages_failed_replies` (the failed replies of those days, nothing else), and stop
being read once the range starts on a counted day.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Date,
    Table,
    func,
    literal,
    literal_column,
    select,
    text,
    type_coerce,
    union_all,
)
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
from storage.models import (
    FAILED_REPLIES,
    ChatRow,
    MessageRow,
    TokenUsageMonthRow,
    TokenUsageRow,
)
from storage.parts import StoreParts

_USAGE = cast(Table, TokenUsageRow.__table__)
_MONTHS = cast(Table, TokenUsageMonthRow.__table__)
_MESSAGES = cast(Table, MessageRow.__table__)
_CHATS = cast(Table, ChatRow.__table__)
MAX_TOP = 10_000
# What a month's rows cost to read, in days' rows: a key counted on any day of a month has one
# row for it, and most keys are counted on several (the benchmark's million messages: 4,450
# users' rows a month against 1,058 a day; its 500 channels are counted nearly every day).
MONTH_IN_DAYS = 4


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
            parts = _parts(where.since, where.until, await self._counted_days(conn))
            channels, channel_count = await self._biggest(conn, where, parts, "channel", top)
            users, user_count = await self._biggest(conn, where, parts, "user", top)
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

    async def _counted_days(self, conn: AsyncConnection) -> tuple[date, date] | None:
        """The first and the last day with counters (an end of the primary key each)."""
        u = _USAGE
        first = select(func.min(u.c.day)).scalar_subquery()
        last = select(func.max(u.c.day)).scalar_subquery()
        found = (await conn.execute(select(first, last))).one()
        return None if found[0] is None else (_day(found[0]), _day(found[1]))

    async def _biggest(
        self, conn: AsyncConnection, where: UsageRange, parts: _Parts, scope: str, top: int
    ) -> tuple[tuple[UsageTotal, ...], int]:
        """The `top` biggest keys of a scope over the range, and how many it has in all: the sums
        of `parts`. A key counted in the range has a reply there (every daily row counts one);
        one whose only rows are the days taken away from a month sums to none, and is left out.
        """
        u, m = _USAGE, _MONTHS
        counted: list[Any] = []
        if parts.months is not None:
            first, last = parts.months
            conditions = [m.c.scope == scope, m.c.month >= first, m.c.month <= last]
            if where.platform:
                conditions.append(m.c.platform == where.platform)
            counted.append(
                select(m.c.platform, m.c.key, m.c.tokens, m.c.replies).where(*conditions)
            )
        for since, until, sign in parts.days:
            tokens, replies = (u.c.tokens, u.c.replies) if sign > 0 else (-u.c.tokens, -u.c.replies)
            span = UsageRange(since, until, where.platform)
            counted.append(
                select(
                    u.c.platform, u.c.key, tokens.label("tokens"), replies.label("replies")
                ).where(*_in_range(span), u.c.scope == scope)
            )
        if len(counted) > 1:
            counted = [union_all(*counted)]
        rows = counted[0].subquery()
        # PostgreSQL sums BIGINTs into NUMERIC (a Decimal a row in Python): back to BIGINT.
        tokens_sum = sql_cast(func.sum(rows.c.tokens), BigInteger).label("tokens")
        replies_sum = func.sum(rows.c.replies)
        query = (
            select(rows.c.platform, rows.c.key, tokens_sum, replies_sum, func.count().over())
            .group_by(rows.c.platform, rows.c.key)
            .having(replies_sum > 0)
            .order_by(tokens_sum.desc(), rows.c.platform, rows.c.key)
            .limit(top)
        )
        found = (await conn.execute(query)).all()
        totals = tuple(UsageTotal(p, key, int(t), int(r)) for p, key, t, r, _ in found)
        return totals, int(found[0][4]) if found else 0

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


@dataclass(frozen=True, slots=True)
class _Parts:
    """A range of days as the counters sum it: the monthly rows of `months` (first and last
    month, both summed), and the daily rows of each `days` span added (+1) or taken away (-1)."""

    months: tuple[date, date] | None
    days: tuple[tuple[date, date, int], ...]


def _parts(since: date, until: date, counted: tuple[date, date] | None) -> _Parts:
    """About the fewest rows that sum to the range from `since` to `until`: every whole month
    from its monthly rows; an edge month from its monthly row less its days outside the range
    when that reads fewer rows than its days inside, else from those days. Rows are reckoned in
    days: a day that holds counters is one (`counted`: the first and last of them; the days
    beyond cost nothing to read), a month's rows as many as MONTH_IN_DAYS days at most (as many
    as its days that hold counters, if fewer). Never more than the range's days by that count.
    """

    def held(first: date, last: date) -> int:
        if counted is None:
            return 0
        first, last = max(first, counted[0]), min(last, counted[1])
        return max(0, (last - first).days + 1)

    months: list[date] = []
    days: list[tuple[date, date, int]] = []
    month = since.replace(day=1)
    while month <= until:
        following = _next_month(month)
        end = following - timedelta(days=1)
        first, last = max(since, month), min(until, end)
        inside, all_month = held(first, last), held(month, end)
        if (first, last) == (month, end) or (
            all_month > 0 and all_month - inside + min(MONTH_IN_DAYS, all_month) <= inside
        ):
            months.append(month)
            # Taken away even where nothing is counted (no rows to read): the sum stays exact
            # if a day is counted meanwhile.
            if month < first:
                days.append((month, first - timedelta(days=1), -1))
            if last < end:
                days.append((last + timedelta(days=1), end, -1))
        elif days and days[-1][2] > 0 and days[-1][1] == month - timedelta(days=1):
            days[-1] = (days[-1][0], last, 1)  # the days of the month before go on into it
        else:
            days.append((first, last, 1))
        month = following
    return _Parts((months[0], months[-1]) if months else None, tuple(days))


def _next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


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
