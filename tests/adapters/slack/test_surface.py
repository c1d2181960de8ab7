"""The rate budgets and message sizes a Slack reply declares to the shared scheduler."""

from __future__ import annotations

import asyncio

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.controls import ReplyButtons
from adapters.slack.events import ReplyPlace
from adapters.slack.streams import START_RATE, STOP_RATE
from adapters.slack.surface import POST_BURST, SlackReplySurface, StreamingSupport
from bridge.config import SlackSettings
from bridge.ports import (
    MessageLimit,
    PlatformError,
    PlatformUnavailable,
    RateBucket,
    RateLimited,
    ReplyEnding,
)
from bridge.scheduler import EditScheduler, Urgency
from sandbox.slack_emulator import SlackEmulator


def surface(team: str = "T0TEAM", channel: str = "C0GENERAL") -> SlackReplySurface:
    place = ReplyPlace(team, channel, "1.000001", "U0ALICE", team, is_dm=False)
    client = AsyncWebClient(token="xoxb-test", base_url="http://127.0.0.1:9/api/")
    settings = SlackSettings(update_rate_per_minute=40, status_rate_per_minute=80)
    return SlackReplySurface(
        client,
        settings,
        place,
        StreamingSupport(),
        placeholder="…",
        scheduler=EditScheduler(interval=1.0),
    )


def test_every_reply_in_a_workspace_shares_one_chat_update_budget() -> None:
    one, two, elsewhere = surface(), surface(channel="C0OTHER"), surface(team="T0OTHER")
    assert one.edit_bucket() == RateBucket("slack:chat.update:T0TEAM", 40, 60.0)
    assert two.edit_bucket() == one.edit_bucket() != elsewhere.edit_bucket()


def test_the_status_line_has_a_budget_per_workspace() -> None:
    one, two, elsewhere = surface(), surface(channel="C0OTHER"), surface(team="T0OTHER")
    assert one.status_bucket() == RateBucket("slack:assistant.threads.setStatus:T0TEAM", 80, 60.0)
    assert two.status_bucket() == one.status_bucket() != elsewhere.status_bucket()


def test_new_messages_are_budgeted_per_channel_one_a_second_after_a_burst() -> None:
    assert surface().post_bucket() == RateBucket(
        "slack:chat.postMessage:T0TEAM:C0GENERAL", 1, 1.0, burst=POST_BURST
    )
    assert POST_BURST == 20  # twenty threads of one channel start at once (see surface.py)
    assert surface(channel="C0OTHER").post_bucket() != surface().post_bucket()


def test_before_anything_is_posted_a_reply_is_sized_for_chat_update() -> None:
    fresh = surface()
    assert fresh.message_limit == MessageLimit(3_500, "utf8_bytes")
    assert not fresh.shows_own_progress and fresh.take_rate_observation() is None


async def test_after_a_stream_ends_the_reply_is_edited_within_the_chat_update_budget() -> None:
    async with SlackEmulator() as emu:
        emu.echo_own_messages = False
        root = await emu.user_message("C0GENERAL", "<@U0BOT> hi", user="U0ALICE")
        place = ReplyPlace("T0TEAM", "C0GENERAL", root, "U0ALICE", "T0TEAM", is_dm=False)
        client = AsyncWebClient(token="xoxb-test", base_url=emu.api_base_url)
        reply = SlackReplySurface(
            client,
            SlackSettings(),
            place,
            StreamingSupport(),
            placeholder="…",
            scheduler=EditScheduler(interval=1.0),
        )
        message = await reply.post("…", response_number=0)
        await reply.update(message, "Hello", final=False)
        assert reply.shows_own_progress and reply.message_limit.size == 10_000
        assert reply.edit_bucket().key == "slack:chat.appendStream:T0TEAM"

        emu.expire_stream("C0GENERAL", message.id)
        await reply.update(message, "Hello world", final=False)
        assert not reply.shows_own_progress
        assert reply.edit_bucket() == RateBucket("slack:chat.update:T0TEAM", 45, 60.0)
        await reply.update(message, "Hello world, again.", final=True)
        await reply.stop_typing()
        shown = emu.message("C0GENERAL", message.id)
    assert shown is not None and shown.rendered == "Hello world, again."
    assert [c.method for c in emu.calls if c.method.startswith("chat.")] == [
        "chat.startStream",
        "chat.appendStream",
        "chat.appendStream",  # message_not_in_streaming_state
        "chat.update",  # the same message, with the whole text
        "chat.update",
    ]


async def test_a_status_whose_answer_was_lost_is_still_cleared_at_the_end() -> None:
    reply = surface()
    sent: list[str] = []

    async def set_status(status: str) -> None:
        sent.append(status)
        if len(sent) == 1:
            raise PlatformUnavailable("timed out waiting for Slack's answer")

    reply._set_status = set_status  # type: ignore[method-assign]
    with pytest.raises(PlatformUnavailable):
        await reply.start_typing()
    await reply.stop_typing()
    assert sent == ["is thinking…", ""]  # it may have been set: it is cleared


async def test_a_status_never_set_is_not_cleared() -> None:
    reply = surface()
    sent: list[str] = []

    async def refused(status: str) -> None:
        sent.append(status)
        raise RateLimited(retry_after=1.0)

    reply._set_status = refused  # type: ignore[method-assign]
    await reply.start_typing()
    await reply.stop_typing()
    assert sent == ["is thinking…"]


async def test_notify_shows_the_author_a_notice_where_they_wrote_and_pings_nobody() -> None:
    async with SlackEmulator() as emu:
        emu.echo_own_messages = False
        client = AsyncWebClient(token="xoxb-test", base_url=emu.api_base_url)
        top = await emu.user_message("C0GENERAL", "<@U0BOT> hi", user="U0ALICE")
        await emu.user_message("C0GENERAL", "more", user="U0ALICE", thread_ts=top)  # a thread

        def writing_to(place: ReplyPlace) -> SlackReplySurface:
            scheduler = EditScheduler(interval=1.0)
            support = StreamingSupport()
            return SlackReplySurface(
                client, SlackSettings(), place, support, placeholder="…", scheduler=scheduler
            )

        def surface_at(ts: str, existing_thread: bool) -> SlackReplySurface:
            place = ReplyPlace("T0TEAM", "C0GENERAL", ts, "U0ALICE", "T0TEAM", is_dm=False,
                               existing_thread=existing_thread)  # fmt: skip
            return writing_to(place)

        await surface_at(top, existing_thread=True).notify("_Slow down_, <!here> @channel")
        # A message that starts a thread: its notice goes beside it, as the thread has no
        # replies yet (Slack would show it nowhere).
        lone = await emu.user_message("C0GENERAL", "<@U0BOT> again", user="U0ALICE")
        await surface_at(lone, existing_thread=False).notify("Not now")
        shown = emu.ephemerals("U0ALICE", "C0GENERAL")
        assert [(e.thread_ts, e.author) for e in shown] == [(top, "U0BOT"), (None, "U0BOT")]
        assert shown[0].rendered == "_Slow down_, <\u200b!here> @\u200bchannel"
        assert shown[1].rendered == "Not now"

        emu.inject_429("chat.postEphemeral", 1, retry_after=3)
        with pytest.raises(RateLimited):
            await surface_at(top, existing_thread=True).notify("again")
        outsider = ReplyPlace("T0TEAM", "C0GENERAL", top, "U0NOBODY", "T0TEAM", is_dm=False)
        with pytest.raises(PlatformError, match="user_not_found"):
            await writing_to(outsider).notify("who?")


async def test_feedback_buttons_go_only_with_the_reply_s_last_write() -> None:
    # The reply ended with text still to write: its full message's final write drops the Stop
    # button without rating it; the message posted as the end carries the feedback buttons at
    # once, with no write after it (a chat.update only for the buttons would spend the budget).
    async with SlackEmulator() as emu:
        emu.echo_own_messages = False
        root = await emu.user_message("C0GENERAL", "<@U0BOT> hi", user="U0ALICE")
        place = ReplyPlace("T0TEAM", "C0GENERAL", root, "U0ALICE", "T0TEAM", is_dm=False)
        client = AsyncWebClient(token="xoxb-test", base_url=emu.api_base_url)
        reply = SlackReplySurface(
            client,
            SlackSettings(),
            place,
            StreamingSupport(),
            native_streaming="never",
            placeholder="…",
            scheduler=EditScheduler(interval=1.0),
            buttons=ReplyButtons(stop=True, feedback=True),
        )
        first = await reply.post("…", response_number=0)
        assert reply.controls_shown
        await reply.update(first, "Part one", final=False)
        assert _kinds(emu, first.id) == ["markdown", "actions"]
        reply.end_reply(ReplyEnding.ANSWERED)
        await reply.update(first, "Part one", final=True)
        assert _kinds(emu, first.id) == ["markdown"]

        updates = len(emu.calls_to("chat.update"))
        second = await reply.post("Part two", response_number=0, ends_reply=True)
        assert _kinds(emu, first.id) == ["markdown"]
        assert _kinds(emu, second.id) == ["markdown", "context_actions"]
        assert len(emu.calls_to("chat.update")) == updates

        # Written as the end (not posted as it), the last message gets them with that write.
        third = await reply.post("…", response_number=1)
        await reply.update(third, "Other", final=True, ends_reply=True)
        assert _kinds(emu, third.id) == ["markdown", "context_actions"]

        failed = SlackReplySurface(
            client,
            SlackSettings(),
            place,
            StreamingSupport(),
            native_streaming="never",
            placeholder="…",
            scheduler=EditScheduler(interval=1.0),
            buttons=ReplyButtons(stop=True, feedback=True),
        )
        message = await failed.post("…", response_number=0)
        assert _kinds(emu, message.id) == ["markdown", "actions"]
        failed.end_reply(ReplyEnding.FAILED)
        await failed.update(message, "The model failed.", final=True)
        assert _kinds(emu, message.id) == ["markdown"]  # no Stop, and nothing to rate


def _kinds(emu: SlackEmulator, ts: str) -> list[str]:
    shown = emu.message("C0GENERAL", ts)
    assert shown is not None
    return [block["type"] for block in shown.blocks or ()]


class VirtualTime:
    """The scheduler's clock: waiting for a budget moves it on at once."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


async def test_spent_stream_budgets_post_instead_of_waiting_and_show_the_end_before_the_stop() -> (
    None
):
    # 50 replies ending at once in one workspace: chat.stopStream's tier (about 20 a minute)
    # makes most wait for their stop. Their text is shown at once by an append (the appends'
    # budget is larger); only the stop, which ends the streaming state, waits its turn. A
    # reply that finds this minute's stream starts spent is posted and edited instead.
    async with SlackEmulator() as emu:
        emu.echo_own_messages = False
        root = await emu.user_message("C0GENERAL", "<@U0BOT> hi", user="U0ALICE")
        place = ReplyPlace("T0TEAM", "C0GENERAL", root, "U0ALICE", "T0TEAM", is_dm=False)
        client = AsyncWebClient(token="xoxb-test", base_url=emu.api_base_url)
        time = VirtualTime()
        scheduler = EditScheduler(interval=1.0, clock=time, sleep=time.sleep)

        def reply() -> SlackReplySurface:
            return SlackReplySurface(
                client, SlackSettings(), place, StreamingSupport(), placeholder="…",
                scheduler=scheduler,
            )  # fmt: skip

        stops = RateBucket("slack:chat.stopStream:T0TEAM", STOP_RATE, 60.0)
        for _ in range(STOP_RATE):
            assert scheduler.try_acquire(stops, Urgency.FINAL)
        streamed = reply()
        message = await streamed.post("Hello", response_number=0)
        await streamed.update(message, "Hello wor", final=False)
        streamed.end_reply(ReplyEnding.ANSWERED)
        began = time.now
        await streamed.update(message, "Hello world, all of it.", final=True, ends_reply=True)

        calls = [c for c in emu.calls if c.method.startswith("chat.")]
        appended = [c for c in calls if c.method == "chat.appendStream"]
        assert "all of it." in str(appended[-1].args["chunks"])  # shown before the stop
        assert calls[-1].method == "chat.stopStream" and calls.index(appended[-1]) < len(calls) - 1
        assert time.now - began >= 59.0  # the stop waited for room in its tier
        shown = emu.message("C0GENERAL", message.id)
        assert shown is not None and not shown.is_streaming
        assert shown.rendered == "Hello world, all of it."

        starts = RateBucket("slack:chat.startStream:T0TEAM", START_RATE, 60.0)
        while scheduler.try_acquire(starts, Urgency.FIRST_TEXT):
            pass
        posted = reply()
        other = await posted.post("Second", response_number=0)
        assert emu.calls[-1].method == "chat.postMessage"
        assert posted.edit_bucket().key == "slack:chat.update:T0TEAM"
        await posted.update(other, "Second answer", final=True, ends_reply=True)
        assert emu.calls[-1].method == "chat.update"
