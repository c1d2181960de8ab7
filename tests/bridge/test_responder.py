"""The streaming responder against in-memory ports, on a virtual clock (no real sleeping)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

from bridge.domain import ChatKey, MessageStatus, Role
from bridge.ports import Finished, LLMError, RateBucket
from bridge.responder import Responder, ResponderSettings
from bridge.scheduler import EditScheduler
from bridge.telemetry import ErrorKind
from bridge.writer import WriterStyle
from sandbox.memory_platform import RecordingSurface
from tests.fakes import MemoryStore, Script, ScriptedLLM, inbound
from tests.virtual_time import run_virtual

T = TypeVar("T")
TEXT = "The quick brown fox jumps over the lazy dog. " * 8  # 360 chars, 90 chunks of 4
SETTINGS = ResponderSettings(model="m", system_prompt="Be brief.", titles=False, idle_timeout=5.0)


def build(llm: ScriptedLLM, **overrides: Any) -> tuple[Responder, MemoryStore]:
    store = MemoryStore()
    settings = replace(SETTINGS, **overrides)
    responder = Responder(
        store=store, llm=llm, scheduler=EditScheduler(interval=1.0), settings=settings
    )
    return responder, store


def virtual(test: Callable[[], Awaitable[T]]) -> T:
    return run_virtual(test())


def four_second_stream() -> Script:
    return Script.text(TEXT, chunk=4, delay=4.0 / 90)


def test_a_four_second_stream_shows_few_updates_and_the_exact_text() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM(four_second_stream())
        responder, store = build(llm)
        surface = RecordingSurface()
        report = await responder.handle("test", inbound("hi", "e1"), surface)
        assert report is not None and report.status is MessageStatus.COMPLETE
        [post] = [w for w in surface.writes if w.kind == "post"]
        assert post.text == "…"  # the placeholder, before any delta
        updates = surface.updates()
        assert 2 <= len(updates) <= 6, [round(u.at, 2) for u in updates]
        assert updates[-1].text == TEXT and updates[-1].final
        assert surface.shown == {post.message_id: TEXT}
        assert report.first_delta_at is not None and report.first_text_at is not None
        assert report.first_text_at - report.first_delta_at <= 0.050
        gaps = [b.at - a.at for a, b in zip(updates, updates[1:], strict=False)]
        assert min(gaps) >= 1.0 - 1e-9
        [reply] = store.replies()
        assert reply.content == TEXT and reply.status is MessageStatus.COMPLETE
        assert reply.usage is not None and reply.metadata["visible_updates"] == len(updates)
        assert surface.typing[0][1] is True and not surface.typing_now

    virtual(scenario)


def test_database_writes_per_reply_are_at_most_visible_updates_plus_two() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM(Script.text(TEXT * 3, chunk=4, delay=0.05))  # 13.5 s of deltas
        responder, store = build(llm)
        report = await responder.handle("test", inbound("hi", "e1"), RecordingSurface())
        assert report is not None
        [reply_id] = report.assistant_message_ids
        assert report.visible_updates >= 10
        assert store.writes_by_message[reply_id] <= report.visible_updates + 2

    virtual(scenario)


def test_a_slow_database_thins_progress_saves_out_and_keeps_the_newest_text() -> None:
    """One progress save per reply in flight: updates made while it runs are saved once, after
    it, with the text as it is then; the final save still lands last."""

    class SlowStore(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.saved: list[tuple[str, MessageStatus]] = []
            self.in_flight = 0
            self.max_in_flight = 0

        async def save_reply(self, message_id: int, progress: Any) -> None:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                if progress.status is MessageStatus.STREAMING:
                    await asyncio.sleep(3.5)  # a database far slower than the edits
                self.saved.append((progress.content, progress.status))
                await super().save_reply(message_id, progress)
            finally:
                self.in_flight -= 1

    async def scenario() -> None:
        llm = ScriptedLLM(Script.text(TEXT * 3, chunk=4, delay=0.05))  # 13.5 s of deltas
        store = SlowStore()
        responder = Responder(
            store=store, llm=llm, scheduler=EditScheduler(interval=1.0), settings=SETTINGS
        )
        report = await responder.handle("test", inbound("hi", "e1"), RecordingSurface())
        assert report is not None and report.status is MessageStatus.COMPLETE
        assert report.visible_updates >= 12
        progress = [text for text, status in store.saved if status is MessageStatus.STREAMING]
        # About one save per 3.5 s instead of one per update, each longer than the one before.
        assert 3 <= len(progress) <= 5, len(progress)
        assert all(len(a) < len(b) for a, b in zip(progress, progress[1:], strict=False))
        assert store.max_in_flight == 1
        assert store.saved[-1] == (TEXT * 3, MessageStatus.COMPLETE)

    virtual(scenario)


def test_429s_on_edits_delay_text_but_lose_and_double_nothing() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM(four_second_stream())
        responder, _ = build(llm)
        surface = RecordingSurface()
        surface.refuse_next = [2.0, 2.0, 1.0, 1.0]
        report = await responder.handle("test", inbound("hi", "e1"), surface)
        assert report is not None and report.rate_limited == 4
        assert list(surface.shown.values()) == [TEXT]
        assert surface.max_in_flight == 1  # never two writes in flight for one reply
        texts = [u.text.removesuffix(" ▌") for u in surface.updates()]
        assert all(TEXT.startswith(t) for t in texts)
        assert texts == sorted(texts, key=len)  # never out of order

    virtual(scenario)


def test_twenty_concurrent_replies_share_one_bucket_fairly() -> None:
    bucket = RateBucket("workspace", 20, 5.0)  # 4 edits/s for all twenty together

    async def scenario() -> None:
        llm = ScriptedLLM(*[Script.text(TEXT * 3, chunk=4, delay=0.1) for _ in range(20)])
        responder, _ = build(llm)
        surfaces = [RecordingSurface(edit_bucket=bucket, name=f"r{i}") for i in range(20)]
        reports = await asyncio.gather(
            *(
                responder.handle("test", inbound("go", f"e{i}", key=ChatKey("t", "W", f"C{i}")), s)
                for i, s in enumerate(surfaces)
            )
        )
        times = sorted(u.at for s in surfaces for u in s.updates())
        for start in times:
            assert sum(1 for t in times if start <= t < start + 5.0 - 1e-9) <= 20
        counts = [len(s.updates()) for s in surfaces]
        assert min(counts) >= 5 and max(counts) <= 2 * min(counts), counts
        for report, surface in zip(reports, surfaces, strict=True):
            assert report is not None and report.status is MessageStatus.COMPLETE
            assert list(surface.shown.values()) == [TEXT * 3]
            streaming = [u.at for u in surface.updates() if not u.final]
            gaps = [b - a for a, b in zip(streaming, streaming[1:], strict=False)]
            # Each keeps visibly growing: progress leaves a quarter of the bucket to first and
            # final texts, so a share is one update per 20 x 5 s / 15 = 6.7 s, and up to two
            # shares pass while the scheduler spreads out the first texts' burst.
            assert gaps and max(gaps) <= 2 * 20 * 5.0 / 15 + 1e-6, gaps

    virtual(scenario)


def test_mid_stream_failure_keeps_partial_text_with_a_notice_then_recovers() -> None:
    async def scenario() -> None:
        broken = Script.text(TEXT, chunk=4, delay=0.05, fail_after=30)
        llm = ScriptedLLM(broken, Script.text("All good now."))
        responder, store = build(llm)
        surface = RecordingSurface()
        report = await responder.handle("test", inbound("hi", "e1"), surface)
        assert report is not None and report.status is MessageStatus.FAILED
        partial = TEXT[:120]
        [shown] = surface.shown.values()
        assert shown.startswith(partial) and "Reply interrupted" in shown
        failed = store.replies()[0]
        assert failed.status is MessageStatus.FAILED and failed.content == partial
        assert failed.error and "connection lost" in failed.error
        assert not surface.typing_now
        assert len(llm.requests) == 1  # text was shown: no retry that would repeat it

        second = RecordingSurface()
        report = await responder.handle("test", inbound("again?", "e2"), second)
        assert report is not None and report.status is MessageStatus.COMPLETE
        assert list(second.shown.values()) == ["All good now."]

    virtual(scenario)


def test_errors_before_the_first_token_are_retried_after_retry_after() -> None:
    async def scenario() -> None:
        limited = Script([(0.0, LLMError("429", retryable=True, retry_after=2.5))])
        llm = ScriptedLLM(limited, Script.text("Finally."))
        responder, _ = build(llm)
        surface = RecordingSurface()
        report = await responder.handle("test", inbound("hi", "e1"), surface)
        assert report is not None and report.status is MessageStatus.COMPLETE
        assert report.attempts == 2
        assert report.first_delta_at is not None
        assert report.first_delta_at - report.received_at >= 2.5
        assert list(surface.shown.values()) == ["Finally."]

    virtual(scenario)


def test_a_non_retryable_error_fails_at_once_with_a_notice() -> None:
    async def scenario() -> None:
        bad = Script([(0.0, LLMError("model not found", retryable=False))])
        responder, store = build(ScriptedLLM(bad))
        surface = RecordingSurface()
        report = await responder.handle("test", inbound("hi", "e1"), surface)
        assert report is not None and report.status is MessageStatus.FAILED
        # The channel reads a generic notice; the details are the admin's (log and database).
        assert "the model service returned an error (ref " in next(iter(surface.shown.values()))
        assert store.replies()[0].status is MessageStatus.FAILED
        assert "model not found" in (store.replies()[0].error or "")

    virtual(scenario)


def test_a_stalled_stream_times_out_between_deltas() -> None:
    async def scenario() -> None:
        steps = Script.text("Some words then silence", chunk=5).steps[:3]
        stalled = Script([*steps, (60.0, Script.text("never").steps[0][1])])
        responder, store = build(ScriptedLLM(stalled), idle_timeout=5.0)
        surface = RecordingSurface()
        report = await responder.handle("test", inbound("hi", "e1"), surface)
        assert report is not None and report.status is MessageStatus.FAILED
        assert report.final_at is not None and report.final_at - report.received_at < 7.0
        [shown] = surface.shown.values()
        assert shown.startswith("Some words then") and "the model stopped responding" in shown
        assert store.replies()[0].status is MessageStatus.FAILED
        assert "sent nothing for 5 seconds" in (store.replies()[0].error or "")
        assert not surface.typing_now

    virtual(scenario)


def test_messages_sent_while_a_reply_streams_are_answered_in_order_with_context() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM(
            Script.text("First answer.", chunk=2, delay=0.3),
            Script.text("Second answer."),
            Script.text("Third answer."),
        )
        responder, store = build(llm)
        surfaces = [RecordingSurface(name=f"r{i}") for i in range(3)]

        async def send(i: int, delay: float) -> Any:
            await asyncio.sleep(delay)
            return await responder.handle("test", inbound(f"question {i}", f"e{i}"), surfaces[i])

        reports = await asyncio.gather(send(0, 0), send(1, 0.5), send(2, 0.6))
        assert all(r is not None and r.status is MessageStatus.COMPLETE for r in reports)
        finals = [max(w.at for w in s.writes) for s in surfaces]
        assert finals == sorted(finals)
        posts = [next(w.at for w in s.writes if w.kind == "post") for s in surfaces]
        assert posts == sorted(posts)  # each reply appears after the previous one
        contents = [
            [t.content for t in r.messages if t.role is not Role.SYSTEM] for r in llm.requests
        ]
        assert contents[0] == ["question 0"]
        assert contents[1] == ["question 0", "First answer.", "question 1"]
        assert contents[2] == [
            "question 0",
            "First answer.",
            "question 1",
            "Second answer.",
            "question 2",
        ]
        assert llm.requests[0].messages[0].content == "Be brief."
        assert len(store.replies()) == 3

    virtual(scenario)


def test_a_repeated_event_is_answered_once() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM()
        responder, store = build(llm)
        first = await responder.handle("test", inbound("hi", "same"), RecordingSurface())
        again = RecordingSurface()
        assert first is not None
        assert await responder.handle("test", inbound("hi", "same"), again) is None
        assert again.writes == [] and again.typing == []
        assert len(llm.requests) == 1 and len(store.replies()) == 1

    virtual(scenario)


def test_n_choices_stream_into_their_own_messages() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM(Script.text("Same text for both.", choices=2, delay=0.1))
        responder, store = build(llm, n=2)
        surface = RecordingSurface()
        report = await responder.handle("test", inbound("hi", "e1"), surface)
        assert report is not None and len(report.assistant_message_ids) == 2
        assert sorted(m.response_number for m in store.replies()) == [0, 1]
        assert list(surface.shown.values()) == ["Same text for both."] * 2
        assert llm.requests[0].n == 2

    virtual(scenario)


def test_a_long_reply_continues_in_new_messages_within_the_limit() -> None:
    code = "\n".join(f"print({i})  # a line of code that takes room" for i in range(120))
    text = "Here you go:\n\n```python\n" + code + "\n```\n\nDone."

    async def scenario() -> None:
        llm = ScriptedLLM(Script.text(text, chunk=20, delay=0.02))
        responder, store = build(llm)
        surface = RecordingSurface(limit=2000)
        report = await responder.handle("test", inbound("code please", "e1"), surface)
        assert report is not None and report.status is MessageStatus.COMPLETE
        messages = list(surface.shown.values())
        assert len(messages) >= 3
        assert all(len(m) <= 2000 for m in messages)
        assert all(m.count("```") % 2 == 0 for m in messages)
        assert messages[1].startswith("```python\n")
        assert store.replies()[0].content == text
        assert len(store.replies()[0].platform_message_ids) == len(messages)

    virtual(scenario)


def test_a_title_is_made_after_the_first_exchange_only() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM()
        llm.title_answer = '"Fox Facts."\n'
        responder, store = build(llm, titles=True)
        surface = RecordingSurface()
        await responder.handle("test", inbound("tell me about foxes", "e1"), surface)
        await responder.wait_background()
        await responder.handle("test", inbound("more", "e2"), surface)
        await responder.wait_background()
        assert surface.titles == ["Fox Facts"]
        assert [c.title for c in store.chats.values()] == ["Fox Facts"]
        assert len(llm.titles) == 1 and "tell me about foxes" in llm.titles[0].messages[1].content

    virtual(scenario)


def test_a_drain_answers_the_reply_in_flight_the_queued_ones_and_one_arriving() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM(*(four_second_stream() for _ in range(4)))
        responder, store = build(llm, drain_timeout=60.0)
        surface = RecordingSurface()
        tasks = [
            asyncio.create_task(responder.handle("test", inbound(f"q{n}", f"e{n}"), surface))
            for n in range(3)
        ]  # one chat: the second and third wait for the first
        await asyncio.sleep(1.0)
        stopping = asyncio.create_task(responder.stop())
        await asyncio.sleep(1.0)
        # Delivered by the platform during the drain: it will not be delivered again.
        late = await responder.handle("test", inbound("late", "e9"), surface)
        await stopping
        reports = [await task for task in tasks]
        assert late is not None and late.status is MessageStatus.COMPLETE
        assert [r.status for r in reports if r] == [MessageStatus.COMPLETE] * 3
        assert list(surface.shown.values()) == [TEXT] * 4
        users = [m for m in store.rows.values() if m.role is Role.USER]
        assert [u.status for u in users] == [MessageStatus.COMPLETE] * 4  # all answered

    virtual(scenario)


def test_past_the_drain_deadline_every_reply_ends_with_a_notice() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM(Script.text(TEXT * 10, chunk=4, delay=0.1))
        responder, store = build(llm, drain_timeout=2.0)
        surface = RecordingSurface()
        streaming = asyncio.create_task(responder.handle("test", inbound("hi", "e1"), surface))
        await asyncio.sleep(3.0)
        queued = asyncio.create_task(responder.handle("test", inbound("and", "e2"), surface))
        await asyncio.sleep(0.5)
        await responder.stop()
        assert streaming.cancelled() and queued.cancelled()
        first, second = surface.shown.values()
        assert first.startswith(TEXT[:40]) and "the bridge is restarting (ref " in first
        assert second == SETTINGS.notices.ask_again
        [cut, told] = store.replies()
        assert cut.status is MessageStatus.FAILED and cut.content and "▌" not in first
        assert told.status is MessageStatus.INTERRUPTED and told.platform_message_ids
        assert all(
            m.status is MessageStatus.COMPLETE for m in store.rows.values() if m.role is Role.USER
        )
        assert not surface.typing_now

    virtual(scenario)


def test_failure_notices_are_generic_and_carry_the_logged_reference(
    caplog: Any,
) -> None:
    async def scenario() -> None:
        upstream = LLMError("Cannot connect to host llm.internal:8443 ssl:default", retryable=False)
        responder, store = build(ScriptedLLM(Script([(0.0, upstream)])))
        surface = RecordingSurface()
        await responder.handle("test", inbound("hi", "e1"), surface)
        [shown] = surface.shown.values()
        assert "llm.internal" not in shown and "8443" not in shown
        assert "the model service returned an error (ref " in shown
        ref = shown.split("(ref ")[1][:6]
        logged = [r.getMessage() for r in caplog.records if ref in r.getMessage()]
        assert logged and "llm.internal:8443" in logged[0]
        [reply] = store.replies()
        assert "llm.internal" in (reply.error or "")  # the details stay with the admin

    virtual(scenario)


def test_a_reply_is_cut_at_the_output_limit_and_at_its_deadline_with_a_notice() -> None:
    async def scenario() -> None:
        long = Script.text(TEXT, chunk=4, delay=0.01)
        long.steps = [(d, e) if not isinstance(e, Finished) else (d, Finished(0, "length"))
                      for d, e in long.steps]  # fmt: skip
        endless = Script.text(TEXT * 1000, chunk=4, delay=0.5)
        responder, store = build(ScriptedLLM(long, endless), reply_timeout=30.0)
        surface = RecordingSurface()
        await responder.handle("test", inbound("a", "e1"), surface)
        await responder.handle("test", inbound("b", "e2"), surface)
        cut_at_limit, cut_at_deadline = surface.shown.values()
        assert cut_at_limit.startswith(TEXT.rstrip()) and "length limit" in cut_at_limit
        assert "took too long" in cut_at_deadline and "▌" not in cut_at_deadline
        first, second = store.replies()
        assert first.status is MessageStatus.COMPLETE and first.content == TEXT
        assert second.status is MessageStatus.COMPLETE and 200 < len(second.content) < 400

    virtual(scenario)


def test_a_reply_that_outgrows_its_messages_is_cut_with_a_notice() -> None:
    async def scenario() -> None:
        huge = Script.text("word " * 200_000, chunk=400, delay=0.001)
        style = replace(SETTINGS.style, max_messages=3)
        responder, store = build(ScriptedLLM(huge), style=style)
        surface = RecordingSurface(limit=2000)
        report = await responder.handle("test", inbound("a", "e1"), surface)
        assert report is not None and len(surface.shown) == 3
        assert "length limit" in list(surface.shown.values())[-1]
        assert all(len(text) <= 2000 for text in surface.shown.values())
        [reply] = store.replies()
        assert len(reply.content) < 1_000_000  # the stream was stopped, not read to the end

    virtual(scenario)


def test_history_is_trimmed_to_the_token_budget_keeping_the_newest() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM()
        responder, _ = build(llm, max_context_tokens=300)
        surface = RecordingSurface()
        for i in range(12):
            await responder.handle("test", inbound(f"message {i} " + "pad " * 30, f"e{i}"), surface)
        last = llm.requests[-1].messages
        assert last[0].content == "Be brief."
        assert last[-1].content.startswith("message 11")
        assert len(last) < 24  # older turns were dropped

    virtual(scenario)


def test_a_platform_that_rejects_edits_still_gets_the_final_text() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM(Script.text("Hello there, friend.", delay=0.1))
        responder, store = build(llm, style=WriterStyle(placeholder="…"))
        surface = RecordingSurface()
        surface.fail_updates = True
        report = await responder.handle("test", inbound("hi", "e1"), surface)
        assert report is not None
        # Every edit fails, so each visible state is a fresh post; the last shows everything.
        last_post = [w for w in surface.writes if w.kind == "post"][-1]
        assert last_post.text == "Hello there, friend."
        assert store.replies()[0].content == "Hello there, friend."

    virtual(scenario)


def test_a_native_stream_surface_only_ever_gets_extensions_of_its_text() -> None:
    code = "Look:\n\n```sh\n" + "\n".join(f"echo {i}" for i in range(40)) + "\n```\nBye."

    async def scenario() -> None:
        llm = ScriptedLLM(Script.text(code, chunk=7, delay=0.05))
        responder, _ = build(llm)
        surface = RecordingSurface()
        surface.shows_own_progress = True
        await responder.handle("test", inbound("hi", "e1"), surface)
        texts = [u.text for u in surface.updates()]
        assert len(texts) >= 3 and texts[-1] == code
        assert all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))
        assert not any(t.endswith(" ▌") for t in texts)

    virtual(scenario)


def test_every_message_gets_one_final_update_even_when_its_text_is_unchanged() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM(Script.text("Plain words, streamed.", chunk=3, delay=0.05))
        responder, _ = build(llm)
        surface = RecordingSurface()
        surface.shows_own_progress = True  # the last streamed text equals the final text
        await responder.handle("test", inbound("hi", "e1"), surface)
        finals = [u for u in surface.updates() if u.final]
        assert len(finals) == 1 and finals[0].text == "Plain words, streamed."
        assert surface.updates()[-1].final

    virtual(scenario)


def test_a_passing_platform_failure_retries_the_same_message() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM(Script.text(TEXT, chunk=4, delay=0.02))
        responder, _ = build(llm)
        surface = RecordingSurface()
        surface.unavailable_next = 2
        report = await responder.handle("test", inbound("hi", "e1"), surface)
        assert report is not None and report.status is MessageStatus.COMPLETE
        assert list(surface.shown.values()) == [TEXT]  # one message, nothing shown twice
        assert len([w for w in surface.writes if w.kind == "post"]) == 1

    virtual(scenario)


def test_a_continuation_post_that_fails_for_a_moment_is_posted_again() -> None:
    async def scenario() -> None:
        text = "A long paragraph of words. " * 150  # about 4,000 characters: three messages
        responder, store = build(ScriptedLLM(Script.text(text, chunk=50, delay=0.01)))
        surface = RecordingSurface(limit=2000)
        started = asyncio.create_task(responder.handle("test", inbound("a", "e1"), surface))
        await asyncio.sleep(0.3)  # the placeholder is up; the next post is a continuation
        surface.posts_unavailable_next = 2
        report = await started
        assert report is not None and report.status is MessageStatus.COMPLETE
        assert len(surface.shown) >= 3 and surface.posts_unavailable_next == 0
        assert surface.posts == len(surface.shown)  # each message posted once, nothing lost
        assert "".join(surface.shown.values()).replace(" ", "") == text.replace(" ", "")
        assert store.replies()[0].content == text

    virtual(scenario)


def test_a_channel_the_bot_may_not_write_in_costs_no_llm_call_and_is_logged_once(
    caplog: Any,
) -> None:
    async def scenario() -> None:
        llm = ScriptedLLM()
        responder, store = build(llm)
        surface = RecordingSurface()
        surface.deny_posts = True
        for n in range(5):
            report = await responder.handle("test", inbound(f"m{n}", f"e{n}"), surface)
            assert report is not None and report.status is MessageStatus.FAILED
            assert report.error_kind is ErrorKind.PERMISSION
        assert llm.requests == []
        lines = [r for r in caplog.records if "no permission to write" in r.getMessage()]
        assert len(lines) == 1
        users = [m for m in store.rows.values() if m.role is Role.USER]
        assert all(u.status is MessageStatus.COMPLETE for u in users)  # not retried for ever

    virtual(scenario)


def test_a_chat_gets_one_title_even_when_the_model_is_slow_to_make_it() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM(Script.text("First answer."), Script.text("Second answer."))
        llm.title_delay = 5.0  # the second reply ends before the first title is stored
        responder, store = build(llm, titles=True)
        await responder.handle("test", inbound("first", "e1"), RecordingSurface())
        await responder.handle("test", inbound("second", "e2"), RecordingSurface())
        await responder.wait_background()
        assert len(llm.titles) == 1
        assert "first" in llm.titles[0].messages[-1].content
        [chat] = store.chats.values()
        assert chat.title == "A Short Title"

    virtual(scenario)
