"""Benchmark of the streaming responder: N concurrent replies against the local LLM server (its own
process) and the in-process platform fake, with the real SQL store on SQLite.

    python -m bench.responder --replies 1000 --tokens 600 --rate 20

Runs the bridge's responder and then the seed's approach (one platform update and one database
write per delta) in separate processes, so each gets its own CPU and peak-RSS reading, and prints
both with their ratio. `--approach bridge|seed` runs one of them in this process (JSON on stdout),
against `--llm-url` or else an LLM server of its own (a separate process, outside the readings).

    python -m bench.responder --replies 1000 --tokens 600 --rate 20 --compare policy --rounds 3

What the admin policy costs: the bridge's responder called directly (`bridge`), through the
policy's `Intake` with no token quotas (`intake`), and through it with the daily token quotas on
but never reached (`quotas`: every reply reads its user's and channel's usage first and adds its
tokens after), each in a fresh process; `--rounds` repeats the three in a rotated order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from array import array
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import func, select, update

from adapters.llm import OpenAICompatibleModel
from bridge.app import limit_malloc_arenas, tune_garbage_collector
from bridge.config import LLMSettings, load_settings
from bridge.domain import ChatKey, InboundMessage, MessageStatus, Role
from bridge.policy import build_policy
from bridge.policy.origin import Origin
from bridge.ports import CompletionRequest, Delta, LanguageModel, StreamEvent
from bridge.responder import Responder, ResponderSettings
from bridge.scheduler import EditScheduler
from sandbox.memory_platform import RecordingSurface, Write
from storage import SqlChatStore, create_engine, migrate
from storage.policy import USAGE
from storage.store import MESSAGES

ROOT = Path(__file__).resolve().parents[1]
APPROACHES = ("bridge", "seed", "intake", "quotas")
POLICY_APPROACHES = ("bridge", "intake", "quotas")
# Daily token quotas no run reaches (1,000 replies of ~600 tokens are 0.6 M in all).
NEVER_REACHED = 10**12
USERS = 100  # the replies' authors, for the per-user quota rows


class Histogram:
    """Durations in 1 ms bins up to a minute: constant memory however many are added."""

    BINS = 60_000

    def __init__(self) -> None:
        self.bins = array("L", bytes(8 * self.BINS))
        self.count = 0
        self.longest = 0.0

    def add(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        self.bins[min(int(seconds * 1000), self.BINS - 1)] += 1
        self.count += 1
        self.longest = max(self.longest, seconds)

    def percentile(self, q: float) -> float:
        target = q * self.count
        seen = 0
        for index, n in enumerate(self.bins):
            seen += n
            if seen > target:
                return (index + 0.5) / 1000
        return float("nan")


class LagMeter:
    """Lag from each delta's arrival to the first completed update that shows it, measured as
    the run goes, in constant memory: per reply only the deltas not yet shown are kept, and the
    lags go into a histogram (600,000 stored timestamps would outweigh the bridge). Also the gap
    between a reply's consecutive updates: edit_interval plus however late the update was."""

    def __init__(self) -> None:
        self.lags = Histogram()
        self.gaps = Histogram()
        self.pending: dict[int, deque[tuple[float, int]]] = {}
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.last_update: dict[int, float] = {}

    def arrivals(self, reply: int) -> deque[tuple[float, int]]:
        """Where a reply's stream appends (arrival time, text length) per delta: the meter's
        share of the measured process's work per delta is one append."""
        return self.pending.setdefault(reply, deque())

    def streamed(self, reply: int, first: float, last: float) -> None:
        self.first[reply] = first
        self.last[reply] = last

    def shown(self, reply: int, at: float, length: int, *, final: bool) -> None:
        queue = self.pending.get(reply)
        while queue and queue[0][1] <= length:
            arrived, _ = queue.popleft()
            self.lags.add(at - arrived)
        previous = self.last_update.get(reply)
        if previous is not None and not final:
            # A final update follows the text's end, not the interval: only progress is paced.
            self.gaps.add(at - previous)
        self.last_update[reply] = at

    def spans(self) -> list[float]:
        return [self.last[r] - self.first[r] for r in self.first]

    def concurrency(self) -> tuple[int, float]:
        """The most replies streaming at one moment (between their first and last delta), and
        the time from the first reply's first delta to the last reply's first delta."""
        edges = sorted(
            [(at, 1) for at in self.first.values()] + [(at, -1) for at in self.last.values()]
        )
        peak = current = 0
        for _, step in edges:
            current += step
            peak = max(peak, current)
        firsts = list(self.first.values())
        return peak, (max(firsts) - min(firsts)) if firsts else 0.0


class TimedModel:
    """Wraps the real LLM adapter to note each delta's arrival (the lag's start)."""

    def __init__(self, inner: OpenAICompatibleModel, meter: LagMeter) -> None:
        self.inner = inner
        self.meter = meter
        self.deltas = 0

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        reply = int(request.messages[-1].content.rsplit(" ", 1)[1])
        arrivals = self.meter.arrivals(reply)
        length = deltas = 0
        clock = time.perf_counter
        first = last = 0.0
        try:
            async for event in self.inner.stream(request):
                if isinstance(event, Delta):
                    length += len(event.text)
                    deltas += 1
                    last = clock()
                    arrivals.append((last, length))
                    first = first or last
                yield event
        finally:
            self.deltas += deltas
            if deltas:
                self.meter.streamed(reply, first, last)

    async def complete(self, request: CompletionRequest) -> str:
        return await self.inner.complete(request)


def message(i: int) -> InboundMessage:
    return InboundMessage(
        event_id=f"ev-{i}",
        chat_key=ChatKey("bench", "W", f"C{i}"),
        author_id="U",
        text=f"bench reply {i}",
        platform_message_id=f"m-{i}",
    )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bridge_responder(
    args: argparse.Namespace, store: SqlChatStore, model: LanguageModel, **settings: Any
) -> Responder:
    """The bridge's responder as the benchmarks run it (`settings` overrides its settings)."""
    chosen = ResponderSettings(
        model="bench", titles=False, idle_timeout=60.0, max_retries=0, history_limit=20
    )
    scheduler = EditScheduler(interval=args.interval, clock=time.perf_counter)
    return Responder(
        store=store, llm=model, scheduler=scheduler, settings=replace(chosen, **settings)
    )


async def run_bridge(args: argparse.Namespace, store: SqlChatStore, model: TimedModel) -> list[Any]:
    responder = bridge_responder(args, store, model)
    surfaces = [recording_surface(i, args, model.meter, " ▌") for i in range(args.replies)]
    reports = await asyncio.gather(
        *(responder.handle("bench", message(i), surfaces[i]) for i in range(args.replies))
    )
    assert all(r is not None and r.status is MessageStatus.COMPLETE for r in reports), reports[:3]
    return surfaces


class QuotaLog(logging.Handler):
    """Counts the intake's warnings (a quota not checked because the database did not answer
    in time, a reply's tokens not counted): the quotas' figures hold only if there are none."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def policy_settings(args: argparse.Namespace, *, quotas: bool) -> Any:
    """The policy's settings for the intake runs: replies generated as `bridge_responder`'s
    (the config cannot say "no max_output_tokens": its floor, 4,096, is above every reply)."""
    limits = {"user_daily_tokens": NEVER_REACHED, "channel_daily_tokens": NEVER_REACHED}
    return load_settings(
        None,
        {},
        values={
            "llm": {"model": "bench", "titles": False, "system_prompt": ""},
            "streaming": {"edit_interval": args.interval},
            "limits": limits if quotas else {},
        },
    )


def origin(i: int) -> Origin:
    return Origin(platform="bench", user=f"U{i % USERS}", workspace="W", channel=f"C{i}")


async def prepare_intake(
    args: argparse.Namespace, store: SqlChatStore, model: TimedModel
) -> Callable[[], Awaitable[list[Any]]]:
    """Built before the readings start: the policy (started: it reads the runtime overrides)."""
    responder = bridge_responder(args, store, model)
    settings = policy_settings(args, quotas=args.approach == "quotas")
    parts = build_policy(settings, responder=responder, store=store)
    await parts.policy.start()
    reply = parts.policy.rules.defaults.reply
    assert replace(reply, edit_interval=0.0, max_output_tokens=None) == (
        responder.settings.reply_defaults
    ), reply

    async def run() -> list[Any]:
        surfaces = [recording_surface(i, args, model.meter, " ▌") for i in range(args.replies)]
        reports = await asyncio.gather(
            *(
                parts.intake.receive(message(i), origin(i), always(surfaces[i]))
                for i in range(args.replies)
            )
        )
        complete = all(r is not None and r.status is MessageStatus.COMPLETE for r in reports)
        assert complete, reports[:3]
        return surfaces

    return run


def always(surface: RecordingSurface) -> Callable[[Any], RecordingSurface]:
    """The intake's surface factory for a reply whose surface exists already."""
    return lambda _: surface


async def replies_counted(store: SqlChatStore) -> int:
    """Replies the usage rows count (per user): each reply must have been counted once."""
    query = select(func.coalesce(func.sum(USAGE.c.replies), 0)).where(USAGE.c.scope == "user")
    async with store._read() as conn:
        return int((await conn.execute(query)).scalar_one())


async def run_seed(args: argparse.Namespace, store: SqlChatStore, model: TimedModel) -> list[Any]:
    """The seed's loop: every delta is pushed to the platform and written to the database."""
    surfaces = [recording_surface(i, args, model.meter, "") for i in range(args.replies)]

    async def reply(i: int) -> None:
        user = await store.accept_inbound("bench", message(i))
        assert user is not None
        row = await store.add_message(
            user.chat_id, Role.ASSISTANT, "", status=MessageStatus.PENDING, reply_to_id=user.id
        )
        posted = await surfaces[i].post("…", response_number=0)
        request = CompletionRequest("bench", [_turn(message(i).text)], 0.7)
        text = ""
        async for event in model.stream(request):
            if isinstance(event, Delta):
                text += event.text
                await surfaces[i].update(posted, text, final=False)
                await write_through(store, row.id, text, MessageStatus.STREAMING)
        await surfaces[i].update(posted, text, final=True)
        await write_through(store, row.id, text, MessageStatus.COMPLETE)

    await asyncio.gather(*(reply(i) for i in range(args.replies)))
    return surfaces


async def write_through(store: SqlChatStore, row_id: int, text: str, status: MessageStatus) -> None:
    """The seed's write: one UPDATE transaction per delta (no coalescing), as Rails'
    `message.update(content:)` in the stream loop. Serialized like every SQLite write here."""
    statement = update(MESSAGES).where(MESSAGES.c.id == row_id)
    await store._write(statement.values(content=text, status=status.value))


def _turn(text: str) -> Any:
    from bridge.ports import ChatTurn

    return ChatTurn(Role.USER, text)


def recording_surface(
    i: int, args: argparse.Namespace, meter: LagMeter, cursor: str
) -> RecordingSurface:
    """Reply `i`'s platform: one roomy message, each update timed by `meter`."""

    def observe(write: Write) -> None:
        if write.kind == "update":
            shown = write.length - (0 if write.final or not cursor else len(cursor))
            meter.shown(i, write.at, shown, final=write.final)

    return RecordingSurface(
        limit=40_000,
        name=f"r{i}",
        keep_text=False,
        keep_writes=False,
        observer=observe,
        latency=args.latency,
    )


@contextlib.asynccontextmanager
async def bench_world(args: argparse.Namespace) -> AsyncIterator[tuple[SqlChatStore, TimedModel]]:
    """The store on a fresh SQLite file and the timed model on `args.llm_url`, with the process
    tuned as `chat-bridge run` tunes it."""
    limit_malloc_arenas()  # as `chat-bridge run` does
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/bench.db"
        await migrate(url)
        engine = create_engine(url)
        store = SqlChatStore(engine)
        llm = OpenAICompatibleModel(
            LLMSettings(
                base_url=args.llm_url,
                api_key=SecretStr("bench"),
                request_timeout=120,
                idle_timeout=60,
            )
        )
        model = TimedModel(llm, LagMeter())
        tune_garbage_collector()  # as `chat-bridge run` does once it is built
        try:
            yield store, model
        finally:
            await llm.stop()
            await engine.dispose()


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    warnings = QuotaLog()
    logging.getLogger("bridge.intake").addHandler(warnings)
    async with bench_world(args) as (store, model):
        if args.approach in ("intake", "quotas"):
            runner = await prepare_intake(args, store, model)
        else:
            chosen = run_bridge if args.approach == "bridge" else run_seed
            runner = partial(chosen, args, store, model)
        writes_before, saves_before = store.writes, store._replies.rows_written
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        surfaces = await runner()
        cpu = time.process_time() - cpu_before
        wall = time.perf_counter() - wall_before
        # Read before the lag analysis below, which would otherwise count in the peak.
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        writes = store.writes - writes_before
        saves = store._replies.rows_written - saves_before
        counted = await replies_counted(store)
    meter = model.meter
    # A consumer that cannot keep up reads the stream late: its deltas spread over a longer time
    # than the server's pace (tokens / rate). This is where the seed's lag hides.
    spans = meter.spans()
    peak, starts = meter.concurrency()
    updates = sum(s.update_count for s in surfaces)
    deltas = model.deltas
    return {
        "approach": args.approach,
        "replies": args.replies,
        "deltas": deltas,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "cpu_per_reply_s": round(cpu / args.replies, 4),
        "cores_avg": round(cpu / wall, 2),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "lag_p50_ms": round(meter.lags.percentile(0.50) * 1000, 1),
        "lag_p99_ms": round(meter.lags.percentile(0.99) * 1000, 1),
        "lag_max_ms": round(meter.lags.longest * 1000, 1),
        # Between one reply's consecutive progress updates (ideal: edit_interval).
        "update_gap_p50_ms": round(meter.gaps.percentile(0.50) * 1000, 1),
        "update_gap_p99_ms": round(meter.gaps.percentile(0.99) * 1000, 1),
        # All replies are asked for at once; these show how many actually streamed at once.
        "streaming_at_once": peak,
        "first_delta_spread_s": round(starts, 2),
        "stream_span_p50_s": round(percentile(spans, 0.50), 2),
        "stream_span_p99_s": round(percentile(spans, 0.99), 2),
        "updates_per_reply": round(updates / args.replies, 1),
        # Per reply: the user message's claim + insert are included, as in the seed's loop.
        "db_writes_per_reply": round(writes / args.replies, 1),
        # Of those, the reply rows' progress and final saves, which the write-behind coalesces
        # (fewer on a busier database); the rest are one statement each, not load-dependent.
        "db_saves_per_reply": round(saves / args.replies, 2),
        "db_other_writes_per_reply": round((writes - saves) / args.replies, 2),
        # Through the intake: replies its usage rows count, and its warnings (both must hold:
        # every reply counted once, every quota checked).
        "replies_counted": counted,
        "intake_warnings": warnings.count,
    }


@contextlib.contextmanager
def llm_server(tokens: int, rate: float) -> Any:
    command = [sys.executable, "-m", "sandbox.llm_server", "--port", "0"]
    command += ["--reply-tokens", str(tokens), "--tokens-per-second", str(rate)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"LLM server did not start: {line!r}")
        yield line.rsplit(" ", 1)[1].strip()
    finally:
        process.terminate()
        process.wait(timeout=10)


def run_apart(args: argparse.Namespace, url: str, approach: str) -> dict[str, Any]:
    """One approach in a fresh process (its own CPU and peak-RSS readings)."""
    command = [sys.executable, "-m", "bench.responder", "--approach", approach]
    command += ["--llm-url", url, "--replies", str(args.replies)]
    command += ["--interval", str(args.interval), "--latency", str(args.latency)]
    print(f"running {approach} ...", file=sys.stderr, flush=True)
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def compare(args: argparse.Namespace) -> None:
    if args.compare == "policy":
        compare_policy(args)
        return
    with llm_server(args.tokens, args.rate) as url:
        bridge, seed = (run_apart(args, url, approach) for approach in ("bridge", "seed"))
    print(
        f"{args.replies} concurrent replies of {args.tokens} tokens at {args.rate} tokens/s, "
        f"edit_interval {args.interval}s, platform latency {args.latency * 1000:.0f} ms"
    )
    print(f"{'metric':<28}{'bridge':>12}{'seed':>12}{'seed/bridge':>14}")
    for key in bridge:
        if key in ("approach", "replies", "replies_counted", "intake_warnings"):
            continue
        b, s = bridge[key], seed[key]
        ratio = f"{s / b:.1f}x" if isinstance(b, int | float) and b else "-"
        print(f"{key:<28}{b:>12}{s:>12}{ratio:>14}")
    if args.json:
        Path(args.json).write_text(json.dumps({"bridge": bridge, "seed": seed}, indent=2))


def compare_policy(args: argparse.Namespace) -> None:
    """The direct path, the intake without and with quotas, each round in a rotated order (so a
    machine that gets busier during a round does not always weigh on the same one)."""
    rounds: list[dict[str, dict[str, Any]]] = []
    with llm_server(args.tokens, args.rate) as url:
        for number in range(args.rounds):
            shift = number % len(POLICY_APPROACHES)
            order = POLICY_APPROACHES[shift:] + POLICY_APPROACHES[:shift]
            results = {approach: run_apart(args, url, approach) for approach in order}
            rounds.append({approach: results[approach] for approach in POLICY_APPROACHES})
    print(
        f"{args.replies} concurrent replies of {args.tokens} tokens at {args.rate} tokens/s, "
        f"edit_interval {args.interval}s, platform latency {args.latency * 1000:.0f} ms"
    )
    for number, results in enumerate(rounds, 1):
        print(f"round {number} of {len(rounds)}")
        print(f"{'metric':<28}" + "".join(f"{a:>12}" for a in POLICY_APPROACHES))
        for key in results["bridge"]:
            if key not in ("approach", "replies"):
                print(f"{key:<28}" + "".join(f"{results[a][key]:>12}" for a in POLICY_APPROACHES))
    summary = policy_summary(rounds)
    print("quotas against the intake without them, and against the direct path (median of rounds)")
    for key, value in summary.items():
        print(f"{key:<40}{value!s:>12}")
    if args.json:
        report: dict[str, Any] = {"command": " ".join(["python -m bench.responder", *sys.argv[1:]])}
        report |= {"rounds": rounds, "summary": summary}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


def policy_summary(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The comparisons the policy's targets are about: CPU within 5 %, at most one more write."""

    def median(approach: str, key: str) -> float:
        values = sorted(float(r[approach][key]) for r in rounds)
        middle = len(values) // 2
        return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2

    def change(ratios: list[float]) -> list[float]:
        return [round((ratio - 1) * 100, 1) for ratio in ratios]

    cpu = {a: [r[a]["cpu_per_reply_s"] for r in rounds] for a in POLICY_APPROACHES}
    quotas_vs_intake = [q / i for q, i in zip(cpu["quotas"], cpu["intake"], strict=True)]
    quotas_vs_bridge = [q / b for q, b in zip(cpu["quotas"], cpu["bridge"], strict=True)]
    return {
        "cpu_per_reply_s bridge": median("bridge", "cpu_per_reply_s"),
        "cpu_per_reply_s intake": median("intake", "cpu_per_reply_s"),
        "cpu_per_reply_s quotas": median("quotas", "cpu_per_reply_s"),
        # Per round, so that each ratio compares runs made minutes apart.
        "cpu quotas vs intake, % per round": change(quotas_vs_intake),
        "cpu quotas vs bridge, % per round": change(quotas_vs_bridge),
        "db_writes_per_reply bridge": median("bridge", "db_writes_per_reply"),
        "db_writes_per_reply intake": median("intake", "db_writes_per_reply"),
        "db_writes_per_reply quotas": median("quotas", "db_writes_per_reply"),
        "db_other_writes_per_reply bridge": median("bridge", "db_other_writes_per_reply"),
        "db_other_writes_per_reply intake": median("intake", "db_other_writes_per_reply"),
        "db_other_writes_per_reply quotas": median("quotas", "db_other_writes_per_reply"),
        "lag_p99_ms bridge": median("bridge", "lag_p99_ms"),
        "lag_p99_ms intake": median("intake", "lag_p99_ms"),
        "lag_p99_ms quotas": median("quotas", "lag_p99_ms"),
        "update_gap_p99_ms bridge": median("bridge", "update_gap_p99_ms"),
        "update_gap_p99_ms quotas": median("quotas", "update_gap_p99_ms"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replies", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=600)
    parser.add_argument("--rate", type=float, default=20.0, help="tokens per second per reply")
    parser.add_argument("--interval", type=float, default=1.0, help="streaming.edit_interval")
    parser.add_argument("--latency", type=float, default=0.0, help="platform write latency, s")
    parser.add_argument("--approach", choices=APPROACHES)
    parser.add_argument(
        "--compare",
        choices=("seed", "policy"),
        default="seed",
        help="seed: the bridge against the seed; policy: direct, intake and quotas",
    )
    parser.add_argument("--rounds", type=int, default=1, help="with --compare policy")
    parser.add_argument("--llm-url")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.approach and args.llm_url:
        print(json.dumps(asyncio.run(measure(args))))
    elif args.approach:
        with llm_server(args.tokens, args.rate) as url:
            args.llm_url = url
            print(json.dumps(asyncio.run(measure(args))))
    else:
        compare(args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
