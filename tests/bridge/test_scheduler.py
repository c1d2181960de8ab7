"""The edit scheduler on a virtual clock: intervals, shared budgets, fairness, back-off."""

from __future__ import annotations

import asyncio

from bridge.ports import RateBucket, RateObservation
from bridge.scheduler import EditScheduler, Lane, Urgency
from tests.virtual_time import run_virtual


def max_in_window(times: list[float], period: float) -> int:
    times = sorted(times)
    best = 0
    for i, start in enumerate(times):
        best = max(best, sum(1 for t in times[i:] if t < start + period - 1e-9))
    return best


def test_a_lane_writes_at_most_once_per_interval() -> None:
    async def scenario() -> list[float]:
        scheduler = EditScheduler(interval=1.0)
        lane = Lane(RateBucket("b", 100, 1.0))
        times = []
        for _ in range(5):
            await scheduler.acquire_edit(lane, final=False)
            times.append(scheduler.now())
        return times

    times = run_virtual(scenario())
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(abs(gap - 1.0) < 1e-6 for gap in gaps), gaps


def test_twenty_lanes_share_a_bucket_fairly_within_its_budget() -> None:
    bucket = RateBucket("workspace", 10, 2.0)  # 5 writes per second for everyone together

    async def scenario() -> dict[int, list[float]]:
        scheduler = EditScheduler(interval=1.0)
        grants: dict[int, list[float]] = {i: [] for i in range(20)}

        async def reply(i: int) -> None:
            lane = Lane(bucket)
            start = scheduler.now()
            while scheduler.now() - start < 30:
                await scheduler.acquire_edit(lane, final=False)
                lane.shown_text = True
                grants[i].append(scheduler.now())

        await asyncio.gather(*(reply(i) for i in range(20)))
        return grants

    grants = run_virtual(scenario())
    every = [t for times in grants.values() for t in times]
    assert max_in_window(every, 2.0) <= 10
    counts = [len(times) for times in grants.values()]
    # 30 s at 5 grants/s shared by 20 replies: about 7.5 each, and nobody starves.
    assert min(counts) >= 6 and max(counts) - min(counts) <= 1, counts
    for times in grants.values():
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert max(gaps) <= 5.0, gaps  # every reply keeps updating


def test_first_text_goes_before_progress_when_the_bucket_is_short() -> None:
    bucket = RateBucket("b", 1, 1.0)

    async def scenario() -> list[str]:
        scheduler = EditScheduler(interval=0.0)
        order: list[str] = []
        await scheduler.acquire(bucket, Urgency.PROGRESS, 0.0)  # uses the only slot

        async def want(name: str, urgency: Urgency, since: float) -> None:
            await scheduler.acquire(bucket, urgency, since)
            order.append(name)

        await asyncio.gather(
            want("progress-old", Urgency.PROGRESS, 1.0),
            want("final", Urgency.FINAL, 5.0),
            want("first", Urgency.FIRST_TEXT, 9.0),
            want("progress-older", Urgency.PROGRESS, 0.5),
        )
        return order

    assert run_virtual(scenario()) == ["first", "final", "progress-older", "progress-old"]


def test_a_429_blocks_the_whole_bucket_for_retry_after() -> None:
    bucket = RateBucket("b", 100, 1.0)

    async def scenario() -> float:
        scheduler = EditScheduler(interval=0.0)
        start = scheduler.now()
        scheduler.penalize(bucket, 3.5)
        await scheduler.acquire(bucket, Urgency.FIRST_TEXT, 0.0)
        assert scheduler.stats("b") == (1, 1)
        return scheduler.now() - start

    assert abs(run_virtual(scenario()) - 3.5) < 1e-6


def test_headers_that_say_nothing_remains_block_until_reset() -> None:
    bucket = RateBucket("discord:channel", 50, 1.0)  # a first guess, corrected by headers

    async def scenario() -> list[float]:
        scheduler = EditScheduler(interval=0.0)
        start = scheduler.now()
        scheduler.observe(bucket, RateObservation(limit=5, remaining=4, reset_after=5.0))
        times = []
        for _ in range(9):
            await scheduler.acquire(bucket, Urgency.PROGRESS, 0.0)
            times.append(scheduler.now() - start)
        return times

    times = run_virtual(scenario())
    # Learned 5 per 5 s: one already used by the observed write, so 4 now, the rest 5 s later.
    assert max_in_window(times, 5.0) <= 5
    assert times[3] < 0.01 and times[4] >= 5.0 - 1e-6
