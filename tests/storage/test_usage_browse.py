"""The usage page's queries (the `UsageBrowser` port) on SQLite and PostgreSQL: tokens, replies,
failed replies and 429s per day and platform, the biggest channels and users of a range, and
who is near or over a daily quota. Days counted before replies' outcomes were take their failed
replies from the messages' status, and say their 429s are unknown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import cast

import pytest
from sqlalchemy import Table, update

from bridge.domain import ChatKey, MessageStatus, Role
from bridge.ports import (
    QuotaLine,
    ReplyOutcome,
    ReplyProgress,
    UsageDay,
    UsageLine,
    UsageRange,
    UsageTotal,
)
from storage import SqlChatStore, create_engine, migrate
from storage.models import MessageRow
from tests.storage.conversations_seed import answer, ask

MESSAGES = cast(Table, MessageRow.__table__)
D0, D1, D2, D3, D4 = (date(2027, 2, day) for day in range(1, 6))
SLACK_C1 = ChatKey("slack", "T1", "C1", "")
DISCORD_D1 = ChatKey("discord", "G1", "D1", "")


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlChatStore]:
    await migrate(database_url)
    engine = create_engine(database_url)
    store = SqlChatStore(engine, write_window=0.0)
    yield store
    await store.close()
    await engine.dispose()


async def failed_reply(
    store: SqlChatStore, key: ChatKey, name: str, at: datetime, *, choices: int = 1
) -> None:
    """A reply stored as failed (with `choices` messages), last written at `at`."""
    question = await ask(store, key, f"question {name}", name)
    first = await answer(store, question, "", status=MessageStatus.FAILED, error="model down")
    ids = [first.id]
    for number in range(1, choices):
        other = await store.add_message(
            question.chat_id,
            Role.ASSISTANT,
            "",
            status=MessageStatus.STREAMING,
            reply_to_id=question.id,
            response_number=number,
        )
        await store.save_reply(other.id, ReplyProgress("", MessageStatus.FAILED, error="down"))
        ids.append(other.id)
    async with store._begin() as conn:  # noqa: SLF001 - the time only the clock could set
        await conn.execute(update(MESSAGES).where(MESSAGES.c.id.in_(ids)).values(updated_at=at))


def noon(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, 0, tzinfo=UTC)


@pytest.fixture
async def seeded(store: SqlChatStore) -> SqlChatStore:
    # D1: counted as before revision 0008 (no outcome): tokens and replies only.
    await store.add_usage(D1, "slack", user="U1", channel="C1", tokens=100)
    await store.add_usage(D1, "slack", user="U2", channel="C1", tokens=50)
    await store.add_usage(D1, "discord", user="U9", channel="D1", tokens=200)
    # From D2 on every reply comes with its outcome.
    await store.add_usage(
        D2, "slack", user="U1", channel="C1", tokens=300, outcome=ReplyOutcome(rate_limited=2)
    )
    await store.add_usage(
        D2, "slack", user="U1", channel="C2", tokens=0,
        outcome=ReplyOutcome(failed=True, rate_limited=1),
    )  # fmt: skip
    await store.add_usage(
        D2, "discord", user="U9", channel="D1", tokens=40, outcome=ReplyOutcome(failed=True)
    )
    await store.add_usage(
        D3, "discord", user="U8", channel="D2", tokens=1000, outcome=ReplyOutcome()
    )
    # The stored replies' status: two failed on D1 (one of two choices, counted once; one late
    # in the UTC day), one on D0, two on D2 (a counted day: the counters say 1, they win).
    await failed_reply(store, SLACK_C1, "1.1", noon(D1), choices=2)
    await failed_reply(store, SLACK_C1, "1.2", datetime(2027, 2, 2, 23, 30, tzinfo=UTC))
    await failed_reply(store, SLACK_C1, "0.1", noon(D0))
    await failed_reply(store, SLACK_C1, "2.1", noon(D2))
    await failed_reply(store, SLACK_C1, "2.2", noon(D2))
    # A reply that completed on D1 is no error.
    question = await ask(store, DISCORD_D1, "fine", "1.3")
    await answer(store, question, "all good")
    return store


async def test_days_channels_and_users_of_a_range(seeded: SqlChatStore) -> None:
    summary = await seeded.usage(UsageRange(D1, D3))
    assert summary.days == (
        UsageDay(D1, "discord", 200, 1, failed=0, rate_limited=None),
        UsageDay(D1, "slack", 150, 2, failed=2, rate_limited=None),
        UsageDay(D2, "discord", 40, 1, failed=1, rate_limited=0),
        UsageDay(D2, "slack", 300, 2, failed=1, rate_limited=3),
        UsageDay(D3, "discord", 1000, 1, failed=0, rate_limited=0),
    )
    assert summary.counted_since == D2
    assert summary.channels == (
        UsageTotal("discord", "D2", 1000, 1),
        UsageTotal("slack", "C1", 450, 3),
        UsageTotal("discord", "D1", 240, 2),
        UsageTotal("slack", "C2", 0, 1),
    )
    assert summary.users == (
        UsageTotal("discord", "U8", 1000, 1),
        UsageTotal("slack", "U1", 400, 3),
        UsageTotal("discord", "U9", 240, 2),
        UsageTotal("slack", "U2", 50, 1),
    )
    assert (summary.channel_count, summary.user_count) == (4, 4)

    top = await seeded.usage(UsageRange(D1, D3), top=2)
    assert [t.key for t in top.channels] == ["D2", "C1"] and top.channel_count == 4
    assert [t.key for t in top.users] == ["U8", "U1"] and top.user_count == 4


async def test_one_platform(seeded: SqlChatStore) -> None:
    summary = await seeded.usage(UsageRange(D1, D3, platform="slack"))
    assert summary.days == (
        UsageDay(D1, "slack", 150, 2, failed=2, rate_limited=None),
        UsageDay(D2, "slack", 300, 2, failed=1, rate_limited=3),
    )
    assert summary.channels == (UsageTotal("slack", "C1", 450, 3), UsageTotal("slack", "C2", 0, 1))
    assert summary.users == (UsageTotal("slack", "U1", 400, 3), UsageTotal("slack", "U2", 50, 1))
    assert await seeded.usage(UsageRange(D1, D3, platform="teams")) == (
        await seeded.usage(UsageRange(D4, D4))
    )


async def test_days_before_outcomes_were_counted_read_the_failed_replies(
    seeded: SqlChatStore,
) -> None:
    # Only uncounted days: failures from the messages, 429s unknown; a day with failures and
    # no tokens counted still shows.
    early = await seeded.usage(UsageRange(D0, D1))
    assert early.counted_since is None
    assert early.days == (
        UsageDay(D0, "slack", 0, 0, failed=1, rate_limited=None),
        UsageDay(D1, "discord", 200, 1, failed=0, rate_limited=None),
        UsageDay(D1, "slack", 150, 2, failed=2, rate_limited=None),
    )
    # A range of counted days only: the counters, whatever the messages say.
    late = await seeded.usage(UsageRange(D2, D2))
    assert late.days == (
        UsageDay(D2, "discord", 40, 1, failed=1, rate_limited=0),
        UsageDay(D2, "slack", 300, 2, failed=1, rate_limited=3),
    )
    empty = await seeded.usage(UsageRange(D4, D4))
    assert empty.days == () and empty.channels == () and empty.users == ()
    assert (empty.channel_count, empty.user_count, empty.counted_since) == (0, 0, None)


async def test_the_platform_row_stays_out_of_the_quotas_and_the_admin_report(
    seeded: SqlChatStore,
) -> None:
    assert await seeded.usage_of(D2, "slack", user="U1", channel="C1") == (300, 300)
    report = await seeded.usage_report(D2, "slack")
    assert report.users == (UsageLine("U1", 300, 2),)
    assert report.channels == (UsageLine("C1", 300, 1), UsageLine("C2", 0, 1))


async def test_who_is_near_or_over_a_quota(store: SqlChatStore) -> None:
    for platform, user, channel, tokens in (
        ("slack", "U1", "C1", 450),
        ("slack", "U2", "C1", 320),  # exactly 80 % of 400: near
        ("slack", "U3", "C2", 100),
        ("discord", "U1", "D1", 399),
    ):
        await store.add_usage(D4, platform, user=user, channel=channel, tokens=tokens)
    await store.add_usage(D3, "slack", user="U3", channel="C2", tokens=5000)  # another day

    state = await store.quota_state(D4, user_quota=400, channel_quota=1000)
    assert state.users == (
        QuotaLine("slack", "U1", 450, 400),
        QuotaLine("discord", "U1", 399, 400),
        QuotaLine("slack", "U2", 320, 400),
    )
    assert [line.over for line in state.users] == [True, False, False]
    assert state.users[1].share == pytest.approx(0.9975)
    assert state.channels == () and (state.user_count, state.channel_count) == (3, 0)

    state = await store.quota_state(D4, user_quota=400, channel_quota=900, limit=2)
    assert [line.key for line in state.users] == ["U1", "U1"] and state.user_count == 3
    assert state.channels == (QuotaLine("slack", "C1", 770, 900),)
    discord = await store.quota_state(D4, user_quota=400, channel_quota=0, platform="discord")
    assert discord.users == (QuotaLine("discord", "U1", 399, 400),)
    assert discord.channels == ()
    unlimited = await store.quota_state(D4, user_quota=0, channel_quota=0)
    assert unlimited.users == () and unlimited.channels == ()
    closer = await store.quota_state(D4, user_quota=400, channel_quota=0, near=0.9)
    assert [(line.platform, line.key) for line in closer.users] == [
        ("slack", "U1"), ("discord", "U1"),
    ]  # fmt: skip
