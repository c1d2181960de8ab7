"""The edit scheduler on a virtual clock: intervals, shared budgets, fairness, back-off."""

from __future__ import annotations

import asyncio
import math

import pytest

from bridge.ports import RateBucket, RateLimited, RateObservation
from bridge.scheduler import LEARNED_KEYS, PACE_MARGIN, EditScheduler, Lane, Urgency
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
    # Progress that wants more than the bucket holds leaves a quarter of it (2 of every 10) to
    # first and final texts: 4 grants/s for the 20 replies' progress.
    begin = min(every)
    assert max_in_window([t for t in every if t >= begin + 4.0], 2.0) <= 8
    assert max_in_window(every, 2.0) <= 10
    counts = [len(times) for times in grants.values()]
    # 30 s at 4 grants/s shared by 20 replies: about 6 each, and nobody starves.
    assert min(counts) >= 5 and max(counts) - min(counts) <= 1, counts
    for times in grants.values():
        gaps = [(a - begin, b - a) for a, b in zip(times, times[1:], strict=False)]
        # Every reply keeps updating: one share (20 replies x 2 s / 8 = 5 s) between updates,
        # up to two while the first burst is spread out over the first windows.
        assert max(gap for _, gap in gaps) <= 10.0, gaps
        assert all(gap <= 5.0 + 1e-6 for at, gap in gaps if at >= 10.0), gaps


def test_oversubscribed_progress_leaves_first_texts_a_slot_in_every_window() -> None:
    """A workspace's chat.update budget (45 a minute) wanted by 20 streaming replies: a new
    reply's first text, asked for at any moment, gets a slot within a few seconds, not only
    when progress has left the window (it waited up to 14 s once a minute)."""
    bucket = RateBucket("slack:chat.update:T1", 45, 60.0)

    async def scenario() -> list[float]:
        scheduler = EditScheduler(interval=1.0)
        waits: list[float] = []

        async def reply() -> None:
            lane = Lane(bucket)
            start = scheduler.now()
            while scheduler.now() - start < 180:
                await scheduler.acquire_edit(lane, final=False)
                lane.shown_text = True

        async def first_texts() -> None:
            await asyncio.sleep(30)  # progress has the window to itself by then
            for _ in range(12):
                asked = scheduler.now()
                await scheduler.acquire(bucket, Urgency.FIRST_TEXT, asked)
                waits.append(scheduler.now() - asked)
                await asyncio.sleep(9.7)  # at moments spread over the minute

        await asyncio.gather(first_texts(), *(reply() for _ in range(20)))
        return waits

    waits = run_virtual(scenario())
    assert max(waits) <= 60.0 / 45 * 2, waits  # within two average spacings


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


def test_an_oversubscribed_bucket_spaces_progress_so_final_texts_wait_for_one_slot() -> None:
    """Five replies in a 5-per-5 s channel, all finishing together at various moments.

    Granting every freed slot at once would repeat the first burst each window, so texts that
    finish just after it wait a whole window; spaced progress frees one slot per second.
    """
    bucket = RateBucket("channel", 5, 5.0)

    async def scenario(ends_at: float) -> tuple[list[float], list[float]]:
        scheduler = EditScheduler(interval=1.0)
        start = scheduler.now()
        lags: list[float] = []
        progress: list[float] = []

        async def reply() -> None:
            lane = Lane(bucket)
            loop = asyncio.get_running_loop()
            loop.call_later(ends_at, scheduler.promote, lane)
            while True:
                await scheduler.acquire_edit(lane, final=False)
                lane.shown_text = True
                if lane.finishing:
                    lags.append(scheduler.now() - start - ends_at)
                    return
                progress.append(scheduler.now() - start)
                await asyncio.sleep(0.01)  # the platform's round trip

        await asyncio.gather(*(reply() for _ in range(5)))
        return lags, progress

    means = []
    for ends_at in (12.1, 13.3, 14.6, 15.9, 17.2, 18.5):
        lags, progress = run_virtual(scenario(ends_at))
        assert max(lags) <= 5.0 + 1e-6, (ends_at, lags)
        assert max_in_window(progress, 5.0) <= 5
        later = sorted(t for t in progress if t > 5.0)  # after the first texts' burst
        assert all(b - a >= 1.0 - 1e-6 for a, b in zip(later, later[1:], strict=False)), later
        means.append(sum(lags) / len(lags))
    assert sum(means) / len(means) <= 3.0, means


def test_a_reply_that_finishes_while_waiting_waits_as_a_final_text() -> None:
    bucket = RateBucket("b", 1, 1.0)

    async def scenario() -> list[str]:
        scheduler = EditScheduler(interval=0.0)
        order: list[str] = []
        await scheduler.acquire(bucket, Urgency.PROGRESS, 0.0)  # uses the only slot
        finishing, other = Lane(bucket, shown_text=True), Lane(bucket, shown_text=True)

        async def want(name: str, lane: Lane, since: float) -> None:
            lane.last_write = since
            await scheduler.acquire_edit(lane, final=False)
            order.append(name)

        waiting = [
            asyncio.ensure_future(want("older progress", other, -5.0)),
            asyncio.ensure_future(want("finished", finishing, -1.0)),
        ]
        await asyncio.sleep(0.5)
        scheduler.promote(finishing)
        await asyncio.gather(*waiting)
        assert scheduler._waiting == {}  # nothing is kept for lanes that no longer wait
        return order

    assert run_virtual(scenario()) == ["finished", "older progress"]


def test_a_write_within_a_wider_bucket_draws_from_both() -> None:
    """Discord: each channel has its bucket, and the bot has one global budget over all."""
    everyone = RateBucket("global", 6, 1.0)
    channels = [RateBucket(f"channel-{i}", 5, 5.0, within=everyone) for i in range(4)]

    async def scenario() -> dict[str, list[float]]:
        scheduler = EditScheduler(interval=0.0)
        start = scheduler.now()
        times: dict[str, list[float]] = {c.key: [] for c in channels}

        async def writes(channel: RateBucket) -> None:
            for _ in range(5):
                await scheduler.acquire(channel, Urgency.FIRST_TEXT, scheduler.now())
                times[channel.key].append(scheduler.now() - start)

        await asyncio.gather(*(writes(c) for c in channels))
        assert scheduler.stats("global")[0] == 20
        return times

    times = run_virtual(scenario())
    every = [t for channel in times.values() for t in channel]
    assert max_in_window(every, 1.0) <= 6
    assert all(max_in_window(channel, 5.0) <= 5 for channel in times.values())
    assert max(every) < 4.0  # 20 writes at 6 per second: the global budget is the limit


def test_cosmetic_requests_use_only_a_windows_first_eighth_and_never_delay_text() -> None:
    bucket = RateBucket("global", 16, 1.0)

    async def scenario() -> tuple[list[float], list[float]]:
        scheduler = EditScheduler(interval=0.0)
        start = scheduler.now()
        typing: list[float] = []
        texts: list[float] = []

        async def cosmetic() -> None:
            await scheduler.acquire(bucket, Urgency.BACKGROUND, scheduler.now())
            typing.append(scheduler.now() - start)

        async def text() -> None:
            await scheduler.acquire(bucket, Urgency.FIRST_TEXT, scheduler.now())
            texts.append(scheduler.now() - start)

        background = [asyncio.ensure_future(cosmetic()) for _ in range(4)]
        await asyncio.sleep(0)
        await asyncio.gather(*(text() for _ in range(14)))
        await asyncio.gather(*background)
        return typing, texts

    typing, texts = run_virtual(scenario())
    assert texts == [0.0] * 14  # 2 cosmetic + 14 texts fill the window: no text waited
    assert sorted(typing)[:2] == [0.0, 0.0] and min(sorted(typing)[2:]) >= 1.0 - 1e-6


def test_try_acquire_takes_a_free_slot_now_or_none_and_never_jumps_a_waiting_writer() -> None:
    bucket = RateBucket("status", 4, 60.0)
    wider = RateBucket("global", 100, 1.0)

    async def scenario() -> None:
        scheduler = EditScheduler(interval=0.0)
        # A cosmetic call takes only the window's first eighth (here one of four slots).
        assert scheduler.try_acquire(bucket, Urgency.BACKGROUND)
        assert not scheduler.try_acquire(bucket, Urgency.BACKGROUND)
        assert scheduler.try_acquire(bucket, Urgency.PROGRESS)
        assert scheduler.try_acquire(bucket, Urgency.PROGRESS)
        assert scheduler.try_acquire(bucket, Urgency.PROGRESS)
        assert not scheduler.try_acquire(bucket, Urgency.FIRST_TEXT)  # the window is full
        assert scheduler.stats("status") == (4, 0)

        # A final text waits for the next slot. The platform then says the window holds more:
        # a try does not take the room before that writer has been served.
        waiting = asyncio.ensure_future(scheduler.acquire(bucket, Urgency.FINAL, scheduler.now()))
        await asyncio.sleep(1.0)
        scheduler.observe(bucket, RateObservation(limit=8, remaining=4, reset_after=60.0))
        assert not waiting.done()
        assert not scheduler.try_acquire(bucket, Urgency.PROGRESS)
        # A less urgent waiter (a cosmetic call) does not hold a try back.
        cosmetic = asyncio.ensure_future(
            scheduler.acquire(bucket, Urgency.BACKGROUND, scheduler.now())
        )
        await asyncio.sleep(59.5)
        assert waiting.done() and not cosmetic.done()
        assert scheduler.try_acquire(bucket, Urgency.PROGRESS)
        await cosmetic  # once the window has its first eighth free again

        # A 429 blocks tries too; within a wider bucket, both must have room and both count it.
        scheduler.penalize(wider, 2.0)
        narrow = RateBucket("edit", 10, 1.0, within=wider)
        assert not scheduler.try_acquire(narrow, Urgency.PROGRESS)
        assert scheduler.stats("edit") == (0, 0)
        await asyncio.sleep(2.0)
        assert scheduler.try_acquire(narrow, Urgency.PROGRESS)
        assert scheduler.stats("edit")[0] == 1 and scheduler.stats("global")[0] == 1

    run_virtual(scenario())


async def write_in_new_channels(scheduler: EditScheduler, count: int, every: float) -> None:
    """`count` channels each write once, one every `every` seconds, then go quiet."""
    everyone = RateBucket("global", 50, 1.0)
    for i in range(count):
        channel = RateBucket(f"quiet-{i}", 5, 5.0, within=everyone)
        await scheduler.acquire(channel, Urgency.FIRST_TEXT, scheduler.now())
        # What Discord's headers say after a first write: the period comes back a little longer.
        scheduler.observe(channel, RateObservation(limit=5, remaining=4, reset_after=5.2))
        await asyncio.sleep(every)


def test_buckets_of_channels_that_went_quiet_are_dropped() -> None:
    async def scenario() -> tuple[int, int, int]:
        scheduler = EditScheduler(interval=0.0)
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, len(scheduler._buckets))
                await asyncio.sleep(1.0)

        watcher = asyncio.ensure_future(watch())
        await write_in_new_channels(scheduler, 10_000, every=0.01)  # 100 s
        await asyncio.sleep(60.0)
        # The next reply's writes clear what is left, a batch at a time.
        lane = Lane(RateBucket("busy", 5, 5.0))
        for _ in range(10):
            await scheduler.acquire_edit(lane, final=False)
            lane.shown_text = True
        watcher.cancel()
        return peak, len(scheduler._buckets), len(scheduler._learned)

    peak, held, learned = run_virtual(scenario())
    # While they write, about the channels of the last sweep interval and window are held.
    assert peak <= 2_500, peak
    assert held <= 3, held  # "busy" and the global bucket
    assert learned <= LEARNED_KEYS


def test_a_bucket_in_use_is_never_dropped_and_a_learned_limit_outlives_its_bucket() -> None:
    slow = RateBucket("slow", 1, 300.0)  # one write and a writer waiting for the next slot
    blocked = RateBucket("blocked", 5, 5.0)  # a 429 said: nothing for two minutes
    full = RateBucket("full", 2, 100.0)  # both grants of its window used
    learned = RateBucket("learned", 5, 5.0)  # the headers said 2 per 5 s, not the guessed 5

    async def scenario() -> dict[str, list[float]]:
        scheduler = EditScheduler(interval=0.0)
        start = scheduler.now()
        times: dict[str, list[float]] = {}

        async def write(spec: RateBucket, urgency: Urgency = Urgency.PROGRESS) -> None:
            await scheduler.acquire(spec, urgency, scheduler.now())
            times.setdefault(spec.key, []).append(scheduler.now() - start)

        await write(slow)
        waiting = asyncio.ensure_future(write(slow, Urgency.FINAL))
        scheduler.penalize(blocked, 120.0)
        await write(full)
        await write(full)
        await write(learned)
        scheduler.observe(learned, RateObservation(limit=2, remaining=1, reset_after=5.0))

        await write_in_new_channels(scheduler, 1_000, every=0.06)  # a minute of sweeps
        assert {"slow", "blocked", "full"} <= set(scheduler._buckets)
        assert "learned" not in scheduler._buckets  # idle: dropped, its numbers kept apart
        assert not waiting.done()

        await asyncio.gather(*(write(learned) for _ in range(3)))
        await asyncio.gather(write(full), write(blocked), write(slow), waiting)
        return times

    times = run_virtual(scenario())
    quiet_at = times["learned"][1]
    assert quiet_at >= 60.0 - 1e-6
    # Two at once as the headers said, not the guessed five: the third waits for the window.
    assert times["learned"][1:] == pytest.approx([quiet_at, quiet_at, quiet_at + 5.0])
    assert times["full"][2] >= 100.0 - 1e-6
    assert times["blocked"] == pytest.approx([120.0])
    # The waiting writer gets the next slot of the window, the later one the slot after it.
    assert times["slow"] == pytest.approx([0.0, 300.0, 600.0])


class BurstPlatform:
    """A platform's bucket as Slack keeps a channel's posts: it holds `capacity` writes and
    refills one a second; beyond it, a 429 whose Retry-After is whole seconds, rounded up."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.full_at = float("-inf")
        self.refused = 0

    def write(self, now: float) -> float | None:
        """None if accepted, else the Retry-After."""
        fits_at = self.full_at - (self.capacity - 1)
        if now < fits_at - 1e-9:
            self.refused += 1
            return float(max(1, math.ceil(fits_at - now - 1e-9)))
        self.full_at = max(self.full_at, now) + 1.0
        return None


LATENCY = 0.05  # each way: a burst is all on its way before the first 429 is back


async def post_until_accepted(
    scheduler: EditScheduler, bucket: RateBucket, platform: BurstPlatform
) -> tuple[float, int]:
    """One reply's first post, as the writer makes it: (when it was accepted, 429s it got)."""
    refused = 0
    while True:
        await scheduler.acquire(bucket, Urgency.FIRST_TEXT, scheduler.now())
        await asyncio.sleep(LATENCY)
        arrived = scheduler.now()
        retry_after = platform.write(arrived)
        await asyncio.sleep(LATENCY)
        if retry_after is None:
            return arrived, refused
        refused += 1
        scheduler.penalize(bucket, retry_after)


def test_a_burst_bucket_takes_its_burst_at_once_then_one_per_period() -> None:
    bucket = RateBucket("channel", 1, 1.0, burst=5)

    async def scenario() -> tuple[list[float], list[float]]:
        scheduler = EditScheduler(interval=0.0)
        start = scheduler.now()
        first: list[float] = []
        later: list[float] = []

        async def write(into: list[float]) -> None:
            await scheduler.acquire(bucket, Urgency.FIRST_TEXT, scheduler.now())
            into.append(scheduler.now() - start)

        await asyncio.gather(*(write(first) for _ in range(8)))
        await asyncio.sleep(7.5)  # quiet: it refills one a second, up to five
        await asyncio.gather(*(write(later) for _ in range(7)))
        return first, later

    first, later = run_virtual(scenario())
    # Five at once, then one a second: not one a second from the start, not five every 5 s.
    assert first == pytest.approx([0, 0, 0, 0, 0, 1, 2, 3])
    # Refilled one a second while quiet: a whole burst again, then the same pace.
    quiet = later[0]
    assert later == pytest.approx([quiet] * 5 + [quiet + 1, quiet + 2])


@pytest.mark.parametrize("capacity", [1, 7])
@pytest.mark.parametrize("stagger", [0.0, 0.01])
def test_a_burst_the_platform_cuts_costs_each_refused_write_one_retry_and_is_learned(
    capacity: int, stagger: float
) -> None:
    """Twenty replies start in one channel at once (or 10 ms apart: then the first 429 is back
    before the last of them posts); the scheduler assumes a burst of 20, the platform holds
    `capacity` (1: strictly one a second). Each refused post is retried once, after its
    Retry-After, and the next burst in that channel keeps to what was learned, even once the
    channel went quiet and its bucket was dropped."""
    bucket = RateBucket("slack:post:C1", 1, 1.0, burst=20)

    async def scenario() -> tuple[list[tuple[float, int]], list[tuple[float, int]], bool, int]:
        scheduler = EditScheduler(interval=0.0)
        platform = BurstPlatform(capacity)
        start = scheduler.now()

        async def reply(i: int) -> tuple[float, int]:
            await asyncio.sleep(i * stagger)
            return await post_until_accepted(scheduler, bucket, platform)

        first = await asyncio.gather(*(reply(i) for i in range(20)))
        refused_first = platform.refused
        await asyncio.sleep(120.0)
        # Another channel's write sweeps the quiet one away; what it learned is kept.
        await scheduler.acquire(RateBucket("elsewhere", 5, 5.0), Urgency.FIRST_TEXT, 0.0)
        dropped = bucket.key not in scheduler._buckets
        again = scheduler.now()
        second = await asyncio.gather(
            *(post_until_accepted(scheduler, bucket, platform) for _ in range(10))
        )
        return (
            [(at - start, n) for at, n in first],
            [(at - again, n) for at, n in second],
            dropped,
            platform.refused - refused_first,
        )

    first, second, dropped, refused_later = run_virtual(scenario())
    assert max(n for _, n in first) == 1  # one retry at most, never a second 429
    pace = 1.0 + PACE_MARGIN
    if not stagger:
        assert sum(n for _, n in first) == 20 - capacity
        # The cut-off posts go out from Retry-After (1 s after their 429 came back) at the pace
        # of one a second, kept a margin slower, and arrive a latency later.
        retried = [2 * LATENCY + 1.0 + LATENCY + s * pace for s in range(20 - capacity)]
        assert sorted(at for at, _ in first) == pytest.approx([LATENCY] * capacity + retried)
    assert dropped
    # Learned: the next burst takes the platform's `capacity` at once, then that pace, no 429.
    assert refused_later == 0
    paced = [LATENCY + s * pace for s in range(1, 11 - capacity)]
    assert sorted(at for at, _ in second) == pytest.approx([LATENCY] * capacity + paced)


def test_a_back_off_after_a_server_error_pauses_a_burst_bucket_without_shrinking_it() -> None:
    bucket = RateBucket("channel", 1, 1.0, burst=5)

    async def scenario() -> list[float]:
        scheduler = EditScheduler(interval=0.0)
        start = scheduler.now()
        scheduler.penalize(bucket, 2.0, learn=False)  # a 5xx: wait, but it is no 429
        times: list[float] = []

        async def write() -> None:
            await scheduler.acquire(bucket, Urgency.FIRST_TEXT, scheduler.now())
            times.append(scheduler.now() - start)

        await asyncio.gather(*(write() for _ in range(5)))
        assert scheduler.stats(bucket.key)[1] == 0  # not counted as rate-limited
        return times

    assert run_virtual(scenario()) == pytest.approx([2.0] * 5)  # the whole burst, after the pause


def test_a_burst_cut_to_one_waits_for_retry_after_not_for_the_old_bursts_refill() -> None:
    """The soak's record of one Slack channel (posts at 10.9, 13.0, 15.0 and 16.6 s; all but the
    third refused with Retry-After 2 s): the last refusal cuts the learned burst to one, and the
    next post goes at Retry-After (18.6 s), not when the burst of 20 would have refilled at the
    new pace (33.9 s, as it did)."""
    bucket = RateBucket("slack:post:C1", 1, 1.0, burst=20)

    async def scenario() -> float:
        scheduler = EditScheduler(interval=1.0)
        start = scheduler.now()
        for at, taken in [(10.947, False), (12.953, False), (14.956, True), (16.573, False)]:
            await asyncio.sleep(max(0.0, start + at - scheduler.now()))
            await scheduler.acquire(bucket, Urgency.FIRST_TEXT, scheduler.now())
            if not taken:
                scheduler.penalize(bucket, 2.0)
        await scheduler.acquire(bucket, Urgency.FIRST_TEXT, scheduler.now())
        return scheduler.now() - start

    assert run_virtual(scenario()) == pytest.approx(18.573, abs=0.01)


def test_a_call_within_a_bucket_waits_for_room_and_a_429_blocks_the_bucket() -> None:
    # A Slack stream's stop: Tier 2, outside any reply's lane. 50 replies ending at once get
    # their stops spread over the minutes the tier allows; a 429 pauses the others too.
    bucket = RateBucket("slack:chat.stopStream:T1", 18, 60.0)

    async def scenario() -> tuple[list[float], float]:
        scheduler = EditScheduler(interval=1.0)
        sent: list[float] = []

        async def stop() -> str:
            sent.append(scheduler.now())
            return "ok"

        answers = await asyncio.gather(
            *(scheduler.call_within(bucket, Urgency.FINAL, stop) for _ in range(50))
        )
        assert answers == ["ok"] * 50

        async def refused() -> None:
            raise RateLimited(30.0)

        with pytest.raises(RateLimited):
            await scheduler.call_within(bucket, Urgency.FINAL, refused)
        blocked_at = scheduler.now()
        await scheduler.call_within(bucket, Urgency.FINAL, stop)
        return sent, sent[-1] - blocked_at

    sent, waited = run_virtual(scenario())
    assert max_in_window(sent[:50], 60.0) == 18
    assert sent[49] - sent[0] >= 120.0  # the 50th waits for the third minute
    assert waited >= 30.0
