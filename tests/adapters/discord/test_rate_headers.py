"""What the scheduler is told about a channel's bucket, from the headers of one write."""

from __future__ import annotations

import pytest

from adapters.discord.ratelimits import RESERVE, WINDOW_ALLOWANCE, SeenHeaders, scheduled_limit


def test_the_scheduler_gets_the_whole_bucket_and_a_longer_window() -> None:
    seen = SeenHeaders(limit=5, remaining=4, reset_after=5.0, seen_at=100.0)
    observed = seen.observation(now=100.0)
    assert observed is not None
    assert observed.limit == 5 - RESERVE
    assert observed.remaining == 4 - RESERVE
    # Still "the first write of a fresh window" to the scheduler, which learns the period.
    assert observed.remaining == observed.limit - 1
    assert observed.reset_after == pytest.approx(5.0 + WINDOW_ALLOWANCE)


def test_an_emptied_bucket_reads_as_none_left_until_it_resets() -> None:
    observed = SeenHeaders(limit=5, remaining=0, reset_after=2.0, seen_at=0.0).observation(0.0)
    assert observed is not None and observed.remaining == 0
    assert observed.reset_after == pytest.approx(2.0 + WINDOW_ALLOWANCE)


def test_headers_read_late_count_the_time_that_passed() -> None:
    observed = SeenHeaders(limit=5, remaining=0, reset_after=4.0, seen_at=10.0).observation(13.0)
    assert observed is not None
    assert observed.reset_after == pytest.approx(1.0 + WINDOW_ALLOWANCE)


def test_headers_of_a_window_that_is_over_say_nothing() -> None:
    # discord.py may return a write only once the window it emptied has reset.
    seen = SeenHeaders(limit=5, remaining=0, reset_after=4.0, seen_at=10.0)
    assert seen.observation(14.0) is None
    assert SeenHeaders(limit=5, remaining=0, reset_after=0.0, seen_at=0.0).observation(0.0) is None


def test_every_request_of_a_bucket_is_spendable() -> None:
    # discord.py's post-response sleep no longer holds our writer (see the surface), so nothing
    # needs to be kept in reserve.
    assert scheduled_limit(1) == 1
    assert scheduled_limit(5) == 5
