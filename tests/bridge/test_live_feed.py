"""The responder tells its `ReplyFeed` about every reply as it streams: started, then its visible
text after each write (growing), then how it ended; a failing feed costs the reply nothing."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from bridge.domain import ChatKey, MessageStatus
from bridge.ports import LiveReply, LLMError
from bridge.responder import Responder, ResponderSettings
from bridge.scheduler import EditScheduler
from sandbox.memory_platform import RecordingSurface
from tests.fakes import MemoryStore, Script, ScriptedLLM, inbound
from tests.virtual_time import run_virtual

TEXT = "The quick brown fox jumps over the lazy dog. " * 8  # 360 chars
SETTINGS = ResponderSettings(model="m-live", titles=False, idle_timeout=5.0)


@dataclass
class RecordingFeed:
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def started(self, reply: LiveReply) -> None:
        self.calls.append(("started", reply))

    def shown(self, reply_id: int, text: str, *, updates: int, rate_limited: int) -> None:
        self.calls.append(("shown", (reply_id, text, updates, rate_limited)))

    def ended(self, reply_id: int, status: MessageStatus, error: str | None) -> None:
        self.calls.append(("ended", (reply_id, status, error)))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.calls]

    def shown_calls(self) -> list[tuple[int, str, int, int]]:
        return [args for kind, args in self.calls if kind == "shown"]


def answer(script: Script, feed: Any, surface: RecordingSurface | None = None) -> Any:
    async def scenario() -> Any:
        store = MemoryStore()
        responder = Responder(
            store=store,
            llm=ScriptedLLM(script),
            scheduler=EditScheduler(interval=1.0),
            settings=SETTINGS,
            feed=feed,
        )
        key = ChatKey("slack", "T1", "C1", "1712.5")
        report = await responder.handle(
            "slack", inbound("hi", "e1", key=key, author="U7"), surface or RecordingSurface()
        )
        question = store.rows[report.user_message_id]
        return report, question

    return run_virtual(scenario())


def test_an_answered_reply_is_fed_as_it_grows() -> None:
    feed = RecordingFeed()
    surface = RecordingSurface()
    surface.refuse_next = [1.0, 1.0]  # two 429s on its edits
    report, question = answer(Script.text(TEXT, chunk=4, delay=4.0 / 90), feed, surface)
    assert report.status is MessageStatus.COMPLETE

    kinds = feed.kinds()
    assert kinds[0] == "started" and kinds[-1] == "ended"
    assert set(kinds[1:-1]) == {"shown"} and len(kinds) >= 4
    started: LiveReply = feed.calls[0][1]
    assert started.reply_id == question.id and started.chat_id == question.chat_id
    assert (started.platform, started.workspace, started.channel) == ("slack", "T1", "C1 / 1712.5")
    assert (started.user, started.model) == ("U7", "m-live")
    assert started.started_at > 1_600_000_000  # wall clock

    shown = feed.shown_calls()
    assert {reply_id for reply_id, *_ in shown} == {question.id}
    texts = [text for _, text, _, _ in shown]
    assert len(set(texts)) >= 3  # it visibly grew, write after write
    assert all(TEXT.startswith(text) for text in texts)
    assert [len(t) for t in texts] == sorted(len(t) for t in texts)
    counts = [(updates, limited) for _, _, updates, limited in shown]
    assert counts == sorted(counts)
    assert shown[-1] == (question.id, TEXT, report.visible_updates, 2)
    assert feed.calls[-1][1] == (question.id, MessageStatus.COMPLETE, None)


def test_a_reply_the_model_breaks_off_is_fed_as_failed_with_its_error() -> None:
    feed = RecordingFeed()
    broken = Script.text(TEXT, chunk=4, delay=0.05, fail_after=30)  # 120 chars, then an error
    report, question = answer(broken, feed)
    assert report.status is MessageStatus.FAILED
    kinds = feed.kinds()
    assert kinds[0] == "started" and kinds[-1] == "ended" and "shown" in kinds
    assert feed.shown_calls()[-1][1] == TEXT[:120]
    reply_id, status, error = feed.calls[-1][1]
    assert (reply_id, status) == (question.id, MessageStatus.FAILED)
    assert error is not None and "connection lost" in error


def test_a_reply_that_fails_before_its_first_word_is_fed_as_failed() -> None:
    feed = RecordingFeed()
    refused = Script([(0.0, LLMError("model not found", retryable=False))])
    report, question = answer(refused, feed)
    assert report.status is MessageStatus.FAILED
    assert feed.kinds()[0] == "started" and feed.kinds()[-1] == "ended"
    assert all(text == "" for _, text, _, _ in feed.shown_calls())  # no words, only the notice
    _, status, error = feed.calls[-1][1]
    assert status is MessageStatus.FAILED and error is not None and "model not found" in error


def test_a_failing_feed_costs_the_reply_nothing_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BrokenFeed(RecordingFeed):
        def started(self, reply: LiveReply) -> None:
            raise RuntimeError("watcher down")

        def shown(self, reply_id: int, text: str, *, updates: int, rate_limited: int) -> None:
            raise RuntimeError("watcher down")

        def ended(self, reply_id: int, status: MessageStatus, error: str | None) -> None:
            raise RuntimeError("watcher down")

    with caplog.at_level(logging.ERROR, logger="bridge.live_feed"):
        report, _ = answer(Script.text(TEXT, chunk=4, delay=4.0 / 90), BrokenFeed())
    assert report.status is MessageStatus.COMPLETE and report.error is None
    assert [r.getMessage() for r in caplog.records] == [
        "the live reply feed failed; later failures are not logged"
    ]


def test_without_a_feed_the_responder_answers_as_before() -> None:
    report, _ = answer(Script.text("Fine."), None)
    assert report.status is MessageStatus.COMPLETE and report.texts == ["Fine."]


def test_each_choice_of_a_reply_is_fed_joined() -> None:
    feed = RecordingFeed()

    async def scenario() -> Any:
        responder = Responder(
            store=MemoryStore(),
            llm=ScriptedLLM(Script.text("Yes.", choices=2)),
            scheduler=EditScheduler(interval=1.0),
            settings=replace(SETTINGS, n=2),
            feed=feed,
        )
        return await responder.handle("test", inbound("hi", "e1"), RecordingSurface())

    report = run_virtual(scenario())
    assert report.status is MessageStatus.COMPLETE
    assert feed.shown_calls()[-1][1] == "Yes.\n\nYes."
