"""What the responder reports to its observer, read back from the metrics it becomes (in-memory
ports, virtual clock)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

from bridge.domain import MessageStatus
from bridge.metrics import Registry
from bridge.ports import LLMError
from bridge.responder import Responder, ResponderSettings
from bridge.scheduler import EditScheduler
from bridge.telemetry import BridgeMetrics
from sandbox.memory_platform import RecordingSurface
from tests.fakes import MemoryStore, Script, ScriptedLLM, inbound
from tests.virtual_time import run_virtual

T = TypeVar("T")
TEXT = "The quick brown fox jumps over the lazy dog. " * 8
SETTINGS = ResponderSettings(model="m", titles=False, idle_timeout=5.0)


def build(llm: ScriptedLLM, **overrides: Any) -> tuple[Responder, BridgeMetrics]:
    metrics = BridgeMetrics(Registry(), ["test"])
    responder = Responder(
        store=MemoryStore(),
        llm=llm,
        scheduler=EditScheduler(interval=1.0),
        settings=replace(SETTINGS, **overrides),
        observer=metrics,
    )
    return responder, metrics


def virtual(test: Callable[[], Awaitable[T]]) -> T:
    return run_virtual(test())


def count(metrics: BridgeMetrics, name: str, *labels: str) -> float:
    for line in metrics.registry.render().splitlines():
        if line.startswith(name) and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            values = [
                part.split("=")[1].strip('"') for part in series[len(name) + 1 : -1].split(",")
            ]
            if values == list(labels):
                return float(value)
    return 0.0


def test_a_complete_reply_moves_every_counter_it_should() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM(Script.text(TEXT, chunk=4, delay=4.0 / 90, first_delay=0.3))
        responder, metrics = build(llm)
        surface = RecordingSurface()
        task = asyncio.create_task(responder.handle("test", inbound("hi", "e1"), surface))
        await asyncio.sleep(1.0)
        assert metrics.active.value("test") == 1  # while it streams
        report = await task
        assert report is not None and report.status is MessageStatus.COMPLETE
        assert report.usage is not None
        assert metrics.active.value("test") == 0
        assert count(metrics, "chat_bridge_replies_total", "test", "complete") == 1
        assert count(metrics, "chat_bridge_replies_total", "test", "failed") == 0
        assert count(metrics, "chat_bridge_events_total", "test", "handled") == 1
        edits = count(metrics, "chat_bridge_visible_edits_total", "test")
        assert edits == report.visible_updates == len(surface.updates()) > 1
        prompt = count(metrics, "chat_bridge_llm_tokens_total", "test", "prompt")
        completion = count(metrics, "chat_bridge_llm_tokens_total", "test", "completion")
        assert (prompt, completion) == (report.usage.prompt_tokens, report.usage.completion_tokens)
        assert count(metrics, "chat_bridge_llm_first_token_seconds_count", "test") == 1
        # The first token came 0.3 s after the message: in the 0.5 s bucket, not the 0.25 s one.
        assert count(metrics, "chat_bridge_llm_first_token_seconds_bucket", "test", "0.25") == 0
        assert count(metrics, "chat_bridge_llm_first_token_seconds_bucket", "test", "0.5") == 1
        total = count(metrics, "chat_bridge_reply_seconds_sum", "test")
        assert 4.0 <= total <= 6.0
        assert count(metrics, "chat_bridge_errors_total", "test", "llm") == 0

        assert await responder.handle("test", inbound("hi", "e1"), surface) is None
        assert count(metrics, "chat_bridge_events_total", "test", "duplicate") == 1
        assert count(metrics, "chat_bridge_replies_total", "test", "complete") == 1

    virtual(scenario)


def test_429s_and_llm_retries_are_counted() -> None:
    async def scenario() -> None:
        limited = Script([(0.0, LLMError("429", retryable=True, retry_after=1.0))])
        llm = ScriptedLLM(limited, Script.text(TEXT, chunk=4, delay=0.05))
        responder, metrics = build(llm)
        surface = RecordingSurface()
        surface.refuse_next = [2.0, 1.0, 1.0]
        report = await responder.handle("test", inbound("hi", "e1"), surface)
        assert report is not None and report.rate_limited == 3
        assert count(metrics, "chat_bridge_rate_limited_total", "test") == 3
        assert count(metrics, "chat_bridge_llm_retries_total", "test") == 1

    virtual(scenario)


def test_failures_are_counted_by_kind_and_final_status() -> None:
    async def scenario() -> None:
        bad = Script([(0.0, LLMError("model not found", retryable=False))])
        steps = Script.text("Some words then silence", chunk=5).steps[:3]
        stalled = Script([*steps, (60.0, Script.text("never").steps[0][1])])
        responder, metrics = build(ScriptedLLM(bad, stalled, Script.text(TEXT)))
        await responder.handle("test", inbound("a", "e1"), RecordingSurface())
        await responder.handle("test", inbound("b", "e2"), RecordingSurface())
        broken = RecordingSurface()
        broken.fail_updates = True
        report = await responder.handle("test", inbound("c", "e3"), broken)
        assert report is not None and report.status is MessageStatus.COMPLETE  # stored in full
        assert count(metrics, "chat_bridge_replies_total", "test", "failed") == 2
        assert count(metrics, "chat_bridge_replies_total", "test", "complete") == 1
        assert count(metrics, "chat_bridge_errors_total", "test", "llm") == 1
        assert count(metrics, "chat_bridge_errors_total", "test", "llm_timeout") == 1
        assert count(metrics, "chat_bridge_errors_total", "test", "platform") == 1
        # No token ever arrived for the first reply: only two first-token observations.
        assert count(metrics, "chat_bridge_llm_first_token_seconds_count", "test") == 2
        assert metrics.active.value("test") == 0

    virtual(scenario)


def test_shutdown_counts_interrupted_and_queued_replies() -> None:
    async def scenario() -> None:
        llm = ScriptedLLM(Script.text(TEXT * 10, chunk=4, delay=0.1))
        responder, metrics = build(llm, drain_timeout=2.0)
        first = asyncio.create_task(
            responder.handle("test", inbound("hi", "e1"), RecordingSurface())
        )
        await asyncio.sleep(0.5)
        # Same chat: waits for the first reply's turn.
        queued = asyncio.create_task(
            responder.handle("test", inbound("and", "e2"), RecordingSurface())
        )
        await asyncio.sleep(0.5)
        assert metrics.active.value("test") == 2
        await responder.stop()
        assert first.cancelled() and queued.cancelled()
        assert metrics.active.value("test") == 0
        assert count(metrics, "chat_bridge_errors_total", "test", "shutdown") == 2
        assert count(metrics, "chat_bridge_replies_total", "test", "failed") == 2
        # Nothing arriving after the drain is refused: it is stored for the next start.
        assert count(metrics, "chat_bridge_events_total", "test", "refused") == 0

    virtual(scenario)


def test_a_responder_without_an_observer_still_answers() -> None:
    async def scenario() -> None:
        responder = Responder(
            store=MemoryStore(),
            llm=ScriptedLLM(Script.text("Fine.")),
            scheduler=EditScheduler(interval=1.0),
            settings=SETTINGS,
        )
        report = await responder.handle("test", inbound("hi", "e1"), RecordingSurface())
        assert report is not None and report.status is MessageStatus.COMPLETE

    virtual(scenario)


def test_replies_refused_for_permissions_are_counted_each_time() -> None:
    async def scenario() -> None:
        responder, metrics = build(ScriptedLLM())
        surface = RecordingSurface()
        surface.deny_posts = True
        for n in range(3):
            await responder.handle("test", inbound(f"m{n}", f"e{n}"), surface)
        assert count(metrics, "chat_bridge_errors_total", "test", "permission") == 3
        assert count(metrics, "chat_bridge_replies_total", "test", "failed") == 3

    virtual(scenario)
