"""Benchmark of a runaway reply among ordinary ones: N replies stream at their pace from the local
LLM server while one reply streams millions of characters, half of them CJK, as fast as an
in-process fake model yields them. It measures what the runaway costs the others.

    python -m bench.runaway --replies 50 --rate 20 --length 5000000

Each case runs in a fresh process (`--case SURFACE/WRITER` runs one here, JSON on stdout):
SURFACE is `slack` (a 3,500-byte limit measured in UTF-8 bytes) or `discord` (2,000 characters);
WRITER is `capped` (the writer as it is, 10 messages per reply), `uncapped` (the incremental
layout with no cap) or `whole` (every write lays the whole text out again with the layout of
revision `--whole-from`, and no cap: the writer before the cap). Built from bench.responder's
pieces: its store, timed model, lag meter and surfaces.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import subprocess
import sys
import time
import types
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import bridge.responder
from bench.responder import (
    ROOT,
    Histogram,
    TimedModel,
    bench_world,
    bridge_responder,
    llm_server,
    message,
    recording_surface,
)
from bridge.domain import MessageStatus
from bridge.ports import CompletionRequest, Delta, Finished, MessageLimit, StreamEvent
from bridge.segments import Layout, layout, utf8_length
from bridge.writer import ReplyWriter, WriterStyle
from sandbox.memory_platform import RecordingSurface

COMPLETE = MessageStatus.COMPLETE
CASES = tuple(f"{s}/{w}" for s in ("slack", "discord") for w in ("capped", "uncapped", "whole"))
WATCH_PERIOD = 0.005
# Deltas per network read: a fast stream's socket holds a hundred or more SSE events per read,
# and the adapter yields them all before the loop runs anything else.
DELTAS_PER_READ = 128
# The commit before the incremental layout and the cap: its writer laid out the whole text again.
WHOLE_FROM = "b6fa7ab"

_ENGLISH = (
    "The model keeps writing because nothing told it to stop, and every sentence it adds looks "
    "much like the one before it, so the reply grows and grows. "
)
_JAPANESE = (
    "モデルは止まる理由がないので書き続け、"
    "どの文も前の文とよく似ているので、返信はどこまでも長くなります。"
)
_CODE = "```python\nwhile True:\n    print('again')\n```"


def runaway_tokens() -> list[str]:
    """One round of the runaway's text as tokens: as many CJK characters as others, a code block
    now and then."""
    english = [" " + word for word in _ENGLISH.split()]
    english[0] = english[0].lstrip()
    japanese = [_JAPANESE[i : i + 2] for i in range(0, len(_JAPANESE), 2)]
    japanese = japanese * max(1, round(len(_ENGLISH) / len(_JAPANESE)))
    tokens: list[str] = []
    for paragraph in range(5):
        tokens += [*english, "\n\n", *japanese, "\n\n"]
        if paragraph == 2:
            tokens += [_CODE, "\n\n"]
    return tokens


class RunawayModel:
    """Streams `length` characters as fast as they are read: `DELTAS_PER_READ` deltas, then a
    turn for the rest of the loop, as a socket that always has data does."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.stopped = False
        self.sent = 0
        self.started_at: float | None = None
        self.ended_at: float | None = None

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        tokens = runaway_tokens()
        self.started_at = time.perf_counter()
        try:
            while self.sent < self.length and not self.stopped:
                for index in range(0, len(tokens), DELTAS_PER_READ):
                    for token in tokens[index : index + DELTAS_PER_READ]:
                        self.sent += len(token)
                        yield Delta(0, token)
                    await asyncio.sleep(0)
            yield Finished(0, "stop")
        finally:
            self.ended_at = time.perf_counter()

    async def complete(self, request: CompletionRequest) -> str:
        return "Runaway"


class Router:
    """The runaway's request goes to the fake, every other one to the LLM server."""

    def __init__(self, ordinary: TimedModel, runaway: RunawayModel, runaway_reply: int) -> None:
        self.ordinary = ordinary
        self.runaway = runaway
        self.runaway_reply = runaway_reply

    def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        reply = int(request.messages[-1].content.rsplit(" ", 1)[1])
        chosen = self.runaway if reply == self.runaway_reply else self.ordinary
        return chosen.stream(request)

    async def complete(self, request: CompletionRequest) -> str:
        return await self.ordinary.complete(request)


class LoopWatch:
    """How late a 5 ms sleep wakes, all run long: the lateness is how long the loop was busy with
    something else, so its maximum is the longest single block (within about a millisecond)."""

    def __init__(self) -> None:
        self.late = Histogram()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + WATCH_PERIOD
            await asyncio.sleep(WATCH_PERIOD)
            self.late.add(loop.time() - due)


def committed_segments(revision: str) -> types.ModuleType:
    """bridge/segments.py as of `revision`, imported under another name."""
    source = subprocess.run(
        ["git", "show", f"{revision}:bridge/segments.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType("committed_segments")
    sys.modules[module.__name__] = module  # dataclasses look their module up while building
    exec(compile(source, f"{revision}:bridge/segments.py", "exec"), module.__dict__)
    return module


class WholeRelayoutWriter(ReplyWriter):
    """The writer before the cap: every write lays the whole text out again, with no cap (the
    committed `_targets` and `_lay_out`, and the layout of their revision)."""

    segments: Any = None
    abandoned = False  # set when the benchmark stops waiting: show what was laid out last

    @property
    def full(self) -> bool:
        return False  # no cap, and no layout besides the whole one

    def _targets(self) -> list[str]:
        if self.abandoned and self._targets_cache:
            return self._targets_cache
        limit = self.surface.message_limit
        key = (len(self.text), self.notice, self._finishing, self.surface.shows_own_progress, limit)
        if key != self._targets_key:
            self._targets_key, self._targets_cache = key, self._lay_out_whole()
        return self._targets_cache

    def _lay_out_whole(self) -> list[str]:
        body = self.text
        if self.notice:
            body = f"{body}\n\n{self.notice}" if body else self.notice
        if self._finishing and not body:
            body = self.style.empty_reply
        if not body:
            return [self.style.placeholder]
        limit = self.surface.message_limit
        measure = self.segments.utf8_length if limit.unit == "utf8_bytes" else len
        reserve = len(self.style.cursor) + 2
        segments = self.segments.layout(body, limit.size, reserve=reserve, measure=measure)
        *complete, last = segments
        return [s.final() for s in complete] + [self._display(last)]


def runaway_surface(kind: str) -> RecordingSurface:
    if kind == "slack":
        surface = RecordingSurface(name="runaway", keep_writes=False)
        surface.message_limit = MessageLimit(3_500, "utf8_bytes")
    else:
        surface = RecordingSurface(name="runaway", limit=2_000, keep_writes=False)
    return surface


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    surface_kind, writer = args.case.split("/")
    style = WriterStyle(max_messages=args.max_messages if writer == "capped" else 10**9)
    if writer == "whole":
        WholeRelayoutWriter.segments = committed_segments(args.whole_from)
        bridge.responder.ReplyWriter = WholeRelayoutWriter  # type: ignore[attr-defined]
    async with bench_world(args) as (store, timed):
        runaway = RunawayModel(args.length)
        model = Router(timed, runaway, args.replies)
        responder = bridge_responder(args, store, model, style=style)
        surfaces = [recording_surface(i, args, timed.meter, " ▌") for i in range(args.replies)]
        wild = runaway_surface(surface_kind)
        watch = LoopWatch()
        watcher = asyncio.create_task(watch.run())
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        runaway_reply = asyncio.create_task(responder.handle("bench", message(args.replies), wild))
        reports = await asyncio.gather(
            *(responder.handle("bench", message(i), surfaces[i]) for i in range(args.replies))
        )
        others_wall = time.perf_counter() - wall_before
        done, _ = await asyncio.wait([runaway_reply], timeout=args.grace)
        wall = time.perf_counter() - wall_before
        cpu = time.process_time() - cpu_before
        watcher.cancel()
        streamed, stream_end = runaway.sent, runaway.ended_at or time.perf_counter()
        if not done:
            # The whole re-layout would keep the loop busy for minutes more: end the stream and
            # let the reply finish with what it laid out last.
            runaway.stopped = WholeRelayoutWriter.abandoned = True
            await runaway_reply
        meter = timed.meter
        measure_of = utf8_length if wild.message_limit.unit == "utf8_bytes" else len
        shown = list(wild.shown.values())
        report = runaway_reply.result()
        result = {
            "case": args.case,
            "replies": args.replies,
            "others_complete": sum(1 for r in reports if r and r.status is COMPLETE),
            "others_wall_s": round(others_wall, 2),
            "others_gap_p50_ms": round(meter.gaps.percentile(0.50) * 1000, 1),
            "others_gap_p99_ms": round(meter.gaps.percentile(0.99) * 1000, 1),
            "others_gap_max_ms": round(meter.gaps.longest * 1000, 1),
            "others_lag_p99_ms": round(meter.lags.percentile(0.99) * 1000, 1),
            "loop_block_max_ms": round(watch.late.longest * 1000, 1),
            "loop_block_p99_ms": round(watch.late.percentile(0.99) * 1000, 1),
            "loop_blocks_over_100ms": sum(watch.late.bins[100:]),
            "runaway_chars_streamed": streamed,
            "runaway_stream_s": round(stream_end - wall_before, 2),
            "runaway_finished_in_time": bool(done),
            "runaway_status": report.status.value if report else "-",
            "runaway_messages": len(shown),
            "runaway_largest_message": max(map(measure_of, shown), default=0),
            "runaway_limit": wild.message_limit.size,
            "runaway_last_message_end": shown[-1][-60:] if shown else "",
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
        }
    return result


def layout_timings(args: argparse.Namespace) -> None:
    """How long one layout of the runaway's text blocks the loop, by length: the committed whole
    layout, today's (the same segments), today's capped at `--max-messages`, and one step of the
    incremental layout (a 1,000-character delta at that length)."""
    committed = committed_segments(args.whole_from)
    capped = functools.partial(
        Layout, 3_500, reserve=4, measure=utf8_length, max_segments=args.max_messages
    )
    ways: list[Callable[[str], object]] = [
        lambda text: committed.layout(text, 3_500, reserve=4, measure=committed.utf8_length),
        lambda text: layout(text, 3_500, reserve=4, measure=utf8_length),
        lambda text: capped().extend(text),
    ]
    round_text = "".join(runaway_tokens())
    print(f"{'characters':>10}{'committed':>12}{'layout()':>12}{'capped':>12}{'one step':>12}")
    for length in (100_000, 1_000_000, 5_000_000):
        text = (round_text * (length // len(round_text) + 1))[:length]
        timings = []
        for lay_out in ways:
            started = time.perf_counter()
            lay_out(text)
            timings.append(time.perf_counter() - started)
        growing = Layout(3_500, reserve=4, measure=utf8_length)
        growing.extend(text[:-1_000])
        started = time.perf_counter()
        growing.extend(text[-1_000:])
        timings.append(time.perf_counter() - started)
        print(f"{length:>10,}" + "".join(f"{t * 1000:>10.2f}ms" for t in timings))


def compare(args: argparse.Namespace) -> None:
    results = []
    with llm_server(args.tokens, args.rate) as url:
        for case in args.cases.split(","):
            command = [sys.executable, "-m", "bench.runaway", "--case", case, "--llm-url", url]
            command += ["--replies", str(args.replies), "--length", str(args.length)]
            command += ["--interval", str(args.interval), "--grace", str(args.grace)]
            command += ["--max-messages", str(args.max_messages)]
            command += ["--whole-from", args.whole_from]
            print(f"running {case} ...", file=sys.stderr, flush=True)
            out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(
        f"{args.replies} replies of {args.tokens} tokens at {args.rate} tokens/s, edit_interval "
        f"{args.interval}s, and one runaway of {args.length:,} characters (half CJK)"
    )
    print(f"{'metric':<28}" + "".join(f"{r['case']:>17}" for r in results))
    for key in results[0]:
        if key in ("case", "replies"):
            continue
        cells = (str(r[key]).replace("\n", "⏎")[-16:] for r in results)
        print(f"{key:<28}" + "".join(f"{cell:>17}" for cell in cells))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, ensure_ascii=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replies", type=int, default=50, help="ordinary replies")
    parser.add_argument("--tokens", type=int, default=600, help="tokens per ordinary reply")
    parser.add_argument("--rate", type=float, default=20.0, help="tokens per second per reply")
    parser.add_argument("--length", type=int, default=5_000_000, help="the runaway's characters")
    parser.add_argument("--interval", type=float, default=1.0, help="streaming.edit_interval")
    parser.add_argument("--latency", type=float, default=0.0, help="platform write latency, s")
    parser.add_argument("--max-messages", type=int, default=10, help="the cap of `capped`")
    parser.add_argument("--grace", type=float, default=30.0, help="wait for the runaway, s")
    parser.add_argument("--whole-from", default=WHOLE_FROM, help="revision of `whole`'s layout")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--case", help="run one case in this process")
    parser.add_argument("--llm-url")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--layout-timings", action="store_true", help="time single layouts")
    args = parser.parse_args()
    if args.layout_timings:
        layout_timings(args)
    elif args.case and args.llm_url:
        print(json.dumps(asyncio.run(measure(args)), ensure_ascii=False))
    elif args.case:
        with llm_server(args.tokens, args.rate) as url:
            args.llm_url = url
            print(json.dumps(asyncio.run(measure(args)), ensure_ascii=False))
    else:
        compare(args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
