"""The monthly token counters (`token_usage_months`, revision 0010) on SQLite and PostgreSQL:
each month is the sum of its daily rows after replies are counted, after retention and after
the upgrade that fills them; the usage page's biggest channels and users of a range summed from
whole months and edge days are the sums of the range's daily rows."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import cast

import pytest
from alembic import command
from sqlalchemy import Connection, Table, delete, inspect, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.ports import ReplyOutcome, UsageRange, UsageTotal
from storage import SqlChatStore, create_engine, migrate
from storage.migrate import alembic_config
from storage.models import TokenUsageMonthRow, TokenUsageRow
from storage.usage_browse import _Parts, _parts

USAGE = cast(Table, TokenUsageRow.__table__)
MONTHS = cast(Table, TokenUsageMonthRow.__table__)
Sums = dict[tuple[date, str, str, str], tuple[int, int]]


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlChatStore]:
    await migrate(database_url)
    engine = create_engine(database_url)
    store = SqlChatStore(engine, write_window=0.0)
    yield store
    await store.close()
    await engine.dispose()


async def months_and_days(engine: AsyncEngine) -> tuple[Sums, Sums]:
    """The monthly rows as stored, and as the daily rows sum them (users and channels)."""
    async with engine.connect() as conn:
        stored = await conn.execute(select(MONTHS))
        months = {(r.month, r.scope, r.platform, r.key): (r.tokens, r.replies) for r in stored}
        summed: dict[tuple[date, str, str, str], list[int]] = defaultdict(lambda: [0, 0])
        for r in await conn.execute(select(USAGE).where(USAGE.c.scope.in_(("user", "channel")))):
            counts = summed[(r.day.replace(day=1), r.scope, r.platform, r.key)]
            counts[0] += r.tokens
            counts[1] += r.replies
    return months, {key: (tokens, replies) for key, (tokens, replies) in summed.items()}


async def ranked_from_days(
    engine: AsyncEngine, where: UsageRange, scope: str, top: int
) -> tuple[tuple[UsageTotal, ...], int]:
    """The biggest keys of a range as the daily rows alone say (the query before 0010)."""
    conditions = [USAGE.c.scope == scope, USAGE.c.day >= where.since, USAGE.c.day <= where.until]
    if where.platform:
        conditions.append(USAGE.c.platform == where.platform)
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    async with engine.connect() as conn:
        for r in await conn.execute(select(USAGE).where(*conditions)):
            total = totals[(r.platform, r.key)]
            total[0] += r.tokens
            total[1] += r.replies
    ranked = sorted(totals.items(), key=lambda item: (-item[1][0], item[0]))
    return tuple(UsageTotal(p, k, t, r) for (p, k), (t, r) in ranked[:top]), len(ranked)


async def count_replies(store: SqlChatStore, first: date, days: int, seed: int) -> None:
    """Replies of a few users and channels on two platforms, every day from `first` on."""
    rng = random.Random(seed)
    for offset in range(days):
        day = first + timedelta(days=offset)
        for _ in range(rng.randint(0, 4)):
            platform = rng.choice(("slack", "discord"))
            outcome = rng.choice((None, ReplyOutcome(), ReplyOutcome(failed=True)))
            await store.add_usage(
                day,
                platform,
                user=f"U{rng.randint(1, 9)}",
                channel=f"C{rng.randint(1, 4)}",
                tokens=rng.choice((0, rng.randint(1, 5000))),
                outcome=outcome,
            )


async def test_a_month_is_the_sum_of_its_days_across_month_and_week_ends(
    store: SqlChatStore,
) -> None:
    engine = store._engine  # noqa: SLF001 - the rows themselves are what is checked
    # Thursday 28 January to Tuesday 2 March 2027: two month ends, the week ends between.
    await count_replies(store, date(2027, 1, 28), 34, seed=1)
    # A key cut to its stored 100 characters lands on the same month row as its day's.
    await store.add_usage(date(2027, 2, 28), "slack", user="U" * 150, channel="C1", tokens=9)
    await store.add_usage(date(2027, 2, 28), "slack", user="U" * 120, channel="C1", tokens=1)

    months, summed = await months_and_days(engine)
    assert months == summed
    assert {month for month, *_ in months} == {date(2027, 1, 1), date(2027, 2, 1), date(2027, 3, 1)}
    assert months[(date(2027, 2, 1), "user", "slack", "U" * 100)] == (10, 2)
    # The platform's days are not summed by month.
    assert all(scope in ("user", "channel") for _, scope, _, _ in months)

    # Any write to the daily rows, not only add_usage's: a row moved to another month, one
    # changed, one deleted.
    await store.add_usage(date(2027, 1, 31), "slack", user="U-moved", channel="C1", tokens=3)
    async with engine.begin() as conn:
        await conn.execute(
            update(USAGE)
            .where(USAGE.c.day == date(2027, 1, 31), USAGE.c.key == "U-moved")
            .values(day=date(2027, 3, 31))
        )
        await conn.execute(
            update(USAGE)
            .where(USAGE.c.day == date(2027, 2, 14))
            .values(tokens=USAGE.c.tokens + 7, replies=USAGE.c.replies + 1)
        )
        await conn.execute(delete(USAGE).where(USAGE.c.day == date(2027, 2, 15)))
    months, summed = await months_and_days(engine)
    assert months == summed
    assert (date(2027, 1, 1), "user", "slack", "U-moved") not in months
    assert months[(date(2027, 3, 1), "user", "slack", "U-moved")] == (3, 1)


async def test_replies_counted_at_once_keep_the_months_whole(database_url: str) -> None:
    await migrate(database_url)
    engines = [create_engine(database_url), create_engine(database_url)]
    try:
        stores = [SqlChatStore(engine) for engine in engines]
        # Two processes, two days of one month and the first of the next, the same keys.
        days = (date(2027, 1, 30), date(2027, 1, 31), date(2027, 2, 1))
        await stores[0].add_usage(days[0], "slack", user="U1", channel="C1", tokens=1)
        await asyncio.gather(
            *(
                stores[n % 2].add_usage(days[n % 3], "slack", user="U1", channel="C1", tokens=n)
                for n in range(40)
            )
        )
        months, summed = await months_and_days(engines[0])
        assert months == summed
        assert months[(date(2027, 1, 1), "user", "slack", "U1")] == (1 + 520, 1 + 27)
    finally:
        for engine in engines:
            await engine.dispose()


# The ranges: within a month, across two partial months, partial and whole months at both
# ends, whole months only, before the first and after the last counted day, one day.
RANGES = [
    (date(2027, 2, 3), date(2027, 2, 20)),
    (date(2027, 1, 20), date(2027, 2, 9)),
    (date(2027, 1, 3), date(2027, 4, 27)),
    (date(2027, 1, 27), date(2027, 4, 3)),
    (date(2027, 2, 1), date(2027, 3, 31)),
    (date(2026, 12, 5), date(2027, 2, 2)),
    (date(2027, 3, 30), date(2027, 6, 30)),
    (date(2027, 3, 17), date(2027, 3, 17)),
    (date(2026, 1, 1), date(2026, 12, 31)),
]


async def test_a_ranking_over_partial_and_whole_months_is_the_sum_of_its_days(
    store: SqlChatStore,
) -> None:
    engine = store._engine  # noqa: SLF001
    await count_replies(store, date(2027, 1, 2), 115, seed=2)  # 2 January to 26 April
    counted = (date(2027, 1, 2), date(2027, 4, 26))
    # The ranges take every way of summing: months less days, days only, both.
    plans = [_parts(since, until, counted) for since, until in RANGES]
    assert any(p.months and any(sign < 0 for *_, sign in p.days) for p in plans)
    assert any(p.months and any(sign > 0 for *_, sign in p.days) for p in plans)
    assert any(p.months is None and p.days for p in plans)

    for since, until in RANGES:
        for platform in (None, "slack"):
            where = UsageRange(since, until, platform)
            for top in (3, 100):
                summary = await store.usage(where, top=top)
                found = (
                    (summary.channels, summary.channel_count),
                    (summary.users, summary.user_count),
                )
                expected = (
                    await ranked_from_days(engine, where, "channel", top),
                    await ranked_from_days(engine, where, "user", top),
                )
                assert found == expected, (where, top)


async def test_retention_takes_its_days_out_of_their_months(store: SqlChatStore) -> None:
    engine = store._engine  # noqa: SLF001
    today = datetime.now(UTC).date()
    first = today - timedelta(days=80)
    await count_replies(store, first, 81, seed=3)
    # Retention from the 45th day back: its month keeps its later days only, the months before
    # go whole.
    before = today - timedelta(days=45)
    cutoff = datetime(before.year, before.month, before.day, 12, tzinfo=UTC)
    await store.prune_messages((datetime.now(UTC) - cutoff).total_seconds())

    months, summed = await months_and_days(engine)
    assert months == summed
    assert min(month for month, *_ in months) == before.replace(day=1)
    # A range reaching before retention shows the days still kept, as the daily rows do.
    for where in (UsageRange(first, today), UsageRange(before - timedelta(days=3), today)):
        summary = await store.usage(where, top=100)
        assert (summary.users, summary.user_count) == (
            await ranked_from_days(engine, where, "user", 100)
        )
        assert (summary.channels, summary.channel_count) == (
            await ranked_from_days(engine, where, "channel", 100)
        )


async def test_the_upgrade_fills_the_months_from_the_days_and_goes_down_again(
    database_url: str,
) -> None:
    await migrate(database_url, "0009")
    engine = create_engine(database_url)
    try:
        store = SqlChatStore(engine, write_window=0.0)
        await count_replies(store, date(2027, 1, 25), 12, seed=4)  # the history before 0010
        await migrate(database_url, "0010")
        months, summed = await months_and_days(engine)
        assert months == summed and len(months) > 10
        await count_replies(store, date(2027, 2, 3), 5, seed=5)  # counted after it
        assert (await months_and_days(engine))[0] == (await months_and_days(engine))[1]

        def downgrade(sync: Connection) -> None:
            config = alembic_config()
            config.attributes["connection"] = sync
            command.downgrade(config, "0009")

        async with engine.begin() as conn:
            await conn.run_sync(downgrade)
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert "token_usage_months" not in tables
        # No trigger left behind: the previous version counts a reply as before.
        await store.add_usage(date(2027, 2, 8), "slack", user="U1", channel="C1", tokens=5)
        async with engine.connect() as conn:
            count = "SELECT count(*) FROM token_usage WHERE day = '2027-02-08'"
            assert (await conn.execute(text(count))).scalar_one() == 2
        await migrate(database_url, "0010")
        months, summed = await months_and_days(engine)
        assert months == summed
        assert months[(date(2027, 2, 1), "user", "slack", "U1")][0] >= 5
        await store.close()
    finally:
        await engine.dispose()


def covered(parts: _Parts, day: date) -> int:
    """How many times `day` is summed: its month's row if used, plus or minus its day."""
    times = 0
    if parts.months is not None and parts.months[0] <= day.replace(day=1) <= parts.months[1]:
        times += 1
    for first, last, sign in parts.days:
        if first <= day <= last:
            times += sign
    return times


def test_a_range_is_summed_once_day_by_day_whatever_its_parts() -> None:
    rng = random.Random(6)
    origin = date(2026, 11, 1)
    for _ in range(400):
        since = origin + timedelta(days=rng.randrange(200))
        until = since + timedelta(days=rng.randrange(120))
        start = origin + timedelta(days=rng.randrange(250))
        counted = rng.choice((None, (start, start + timedelta(days=rng.randrange(150)))))
        parts = _parts(since, until, counted)
        for offset in range(-40, (until - since).days + 40):
            day = since + timedelta(days=offset)
            assert covered(parts, day) == int(since <= day <= until), (
                since, until, counted, day,
            )  # fmt: skip


@pytest.mark.parametrize(
    ("since", "until", "counted", "months", "days"),
    [
        # Whole months only.
        (date(2027, 1, 1), date(2027, 2, 28), None, (date(2027, 1, 1), date(2027, 2, 1)), ()),
        # Fewer days outside than inside: the month less those; the days after the last
        # counted one hold nothing (taken away all the same, at no cost).
        (
            date(2027, 1, 4), date(2027, 2, 10), (date(2026, 12, 1), date(2027, 2, 10)),
            (date(2027, 1, 1), date(2027, 2, 1)),
            ((date(2027, 1, 1), date(2027, 1, 3), -1), (date(2027, 2, 11), date(2027, 2, 28), -1)),
        ),
        # More days outside than inside, on both sides: the days, in one span.
        (
            date(2027, 1, 25), date(2027, 2, 5), (date(2026, 12, 1), date(2027, 3, 10)), None,
            ((date(2027, 1, 25), date(2027, 2, 5), 1),),
        ),
        # A month's rows cost about 4 days': 14 days outside cost more than the 16 inside.
        (
            date(2026, 10, 18), date(2026, 11, 16), (date(2026, 9, 4), date(2026, 12, 3)), None,
            ((date(2026, 10, 18), date(2026, 11, 16), 1),),
        ),
        # The month so far (today the 3rd): its row, whatever its days.
        (
            date(2026, 11, 4), date(2026, 12, 3), (date(2026, 9, 4), date(2026, 12, 3)),
            (date(2026, 11, 1), date(2026, 12, 1)),
            (
                (date(2026, 11, 1), date(2026, 11, 3), -1),
                (date(2026, 12, 4), date(2026, 12, 31), -1),
            ),
        ),
        # Nothing counted: the days (none to read).
        (date(2027, 1, 25), date(2027, 3, 5), None, (date(2027, 2, 1), date(2027, 2, 1)),
         ((date(2027, 1, 25), date(2027, 1, 31), 1), (date(2027, 3, 1), date(2027, 3, 5), 1))),
    ],
)  # fmt: skip
def test_the_parts_of_a_range(
    since: date,
    until: date,
    counted: tuple[date, date] | None,
    months: tuple[date, date] | None,
    days: tuple[tuple[date, date, int], ...],
) -> None:
    parts = _parts(since, until, counted)
    assert (parts.months, parts.days) == (months, days)
