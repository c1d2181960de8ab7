"""Benchmark of what the admin policy adds on the way from a user message to its first visible
text: `Intake.receive` with no policy against one of 1,000 ids and 200 overrides, in one run;
also with daily token quotas, and the responder called directly as before the policy.

    python -m bench.policy --messages 2000 [--variants none,large]

Each message goes through the real intake, responder, edit scheduler and SQL store (SQLite in a
temporary directory) to the in-process platform fake; the model is in-process too and sends its
first delta at once, so the time measured is the bridge's own. The variants take turns, in a
random order per turn, so the machine's noise falls on all alike. Per message: the time to the
first text, the intake's own time (until it calls the responder) and the CPU time. Then
`Rules.denial` and `Policy.resolve` are timed alone, with their cache cold (every place new) and
warm.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from bench.responder import percentile
from bridge.app import limit_malloc_arenas, tune_garbage_collector
from bridge.config import Settings, load_settings
from bridge.domain import ChatKey, InboundMessage, MessageStatus, TokenUsage
from bridge.policy import PolicyParts, build_policy
from bridge.policy.effective import EffectiveSettings
from bridge.policy.origin import Origin
from bridge.ports import ChatStore, CompletionRequest, Delta, Finished, StreamEvent
from bridge.responder import Responder, ResponderSettings
from bridge.scheduler import EditScheduler
from sandbox.memory_platform import RecordingSurface, Write
from storage import SqlChatStore, create_engine, migrate

SENDER = "U-sender"
PLATFORM = "discord"
# The places messages come from; every one has an override, so resolving one does real work.
WORKSPACES = [f"G{k}" for k in range(20)]
CATEGORIES = [f"K{k}" for k in range(40)]
CHANNELS = [f"C{k}" for k in range(80)]
THREAD_OVERRIDE_EVERY = 50  # threads T0.x, T50.x, ... have an override (60 of them)
POLICIES = ("none", "large")
# What each measured message goes through: the intake with no policy ("none"), with the large
# one, or with daily token quotas that are never reached (a read before the reply, as well as
# the write after it that every intake makes); or the responder alone, as before the policy.
VARIANTS = ("none", "large", "quotas", "direct")
# (variant, against): the differences reported.
COMPARISONS = (("large", "none"), ("quotas", "none"), ("none", "direct"))
QUOTA = 10**12  # daily tokens per user and per channel: never reached


# --- the two policies ------------------------------------------------------------------------


def large_policy_values(interval: float) -> dict[str, Any]:
    """1,000 ids over the access lists (the sender allowed and not denied, the message's
    channels allowed) and 200 overrides: 20 workspaces, 120 channels and categories, 60 threads."""
    allowed_users = [SENDER] + [f"U{k}" for k in range(399)]
    denied_users = [f"X{k}" for k in range(200)]
    allowed_channels = CATEGORIES + CHANNELS + [f"A{k}" for k in range(80)]
    denied_channels = [f"D{k}" for k in range(100)]
    admins = [f"M{k}" for k in range(100)]
    access = {
        "allowed_users": allowed_users,
        "denied_users": denied_users,
        "allowed_channels": allowed_channels,
        "denied_channels": denied_channels,
        "admins": admins,
    }
    ids = sum(len(ids) for ids in access.values())
    assert ids == 1000, ids
    overrides: list[dict[str, Any]] = []
    overrides += [{"workspace": w, "temperature": 0.5} for w in WORKSPACES]
    overrides += [{"channel": k, "system_prompt": f"category {k}"} for k in CATEGORIES]
    overrides += [{"channel": c, "model": f"model-{c}"} for c in CHANNELS]
    overrides += [
        {"thread": thread_id(n, 1), "max_output_tokens": 500}
        for n in range(0, 60 * THREAD_OVERRIDE_EVERY, THREAD_OVERRIDE_EVERY)
    ]
    assert len(overrides) == 200, len(overrides)
    # The overrides leave the trigger at "mention" (every message here is addressed) and do not
    # change the pace of updates, so both policies show their first text the same way.
    return {**base_values(interval), "access": access, "overrides": overrides}


def base_values(interval: float) -> dict[str, Any]:
    llm = {"model": "bench", "titles": False, "system_prompt": ""}
    return {"llm": llm, "streaming": {"edit_interval": interval}}


def policy_settings(name: str, interval: float) -> Settings:
    values = large_policy_values(interval) if name == "large" else base_values(interval)
    if name == "quotas":
        values["limits"] = {"user_daily_tokens": QUOTA, "channel_daily_tokens": QUOTA}
    return load_settings(None, {}, values=values)


def thread_id(n: int, side: int) -> str:
    """Message n's thread; each variant's messages have their own (`side`), so their chats
    are apart and each message starts a new chat, as the responder benchmark's do."""
    return f"T{n}.{side}"


def origin(n: int, side: int) -> Origin:
    return Origin(
        platform=PLATFORM,
        user=SENDER,
        workspace=WORKSPACES[n % len(WORKSPACES)],
        channel=CHANNELS[n % len(CHANNELS)],
        category=CATEGORIES[n % len(CATEGORIES)],
        thread=thread_id(n, side),
    )


def inbound(n: int, side: int) -> InboundMessage:
    where = origin(n, side)
    return InboundMessage(
        event_id=f"ev-{n}.{side}",
        chat_key=ChatKey(PLATFORM, where.workspace, where.channel, where.thread),
        author_id=SENDER,
        text=f"policy bench {n}.{side}",
        platform_message_id=f"m-{n}.{side}",
    )


# --- the model and the platform --------------------------------------------------------------


class FirstDeltaModel:
    """Sends the first delta as soon as it is asked, then holds the stream until that text is
    shown (so the first visible text is a progress update, as with a real model), then ends."""

    def __init__(self) -> None:
        self.shown: dict[str, asyncio.Event] = {}

    def expect(self, text: str) -> asyncio.Event:
        event = self.shown[text] = asyncio.Event()
        return event

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        shown = self.shown.pop(request.messages[-1].content, None)
        yield Delta(0, "Hello")
        if shown is not None:
            try:
                async with asyncio.timeout(5.0):
                    await shown.wait()
            except TimeoutError:
                pass
        yield Delta(0, ", world.")
        yield Finished(0, "stop")
        yield TokenUsage(12, 3)

    async def complete(self, request: CompletionRequest) -> str:
        return "A title"


@dataclass
class FirstText:
    """When message n's first text was shown (the loop's clock, as the surface records it)."""

    placeholder: str
    shown: asyncio.Event
    at: float | None = None

    def observe(self, write: Write) -> None:
        if self.at is None and write.text and write.text != self.placeholder:
            self.at = write.at
            self.shown.set()


# --- the run ---------------------------------------------------------------------------------


class TimedResponder:
    """The real responder, noting when the intake hands it a message: what comes before is the
    intake's own work (the policy and the limiter), measured without the noise of the rest."""

    def __init__(self, inner: Responder) -> None:
        self.inner = inner
        self.scheduler = inner.scheduler
        self.settings = inner.settings
        self.entered = 0.0

    async def handle(self, *args: Any, **kwargs: Any) -> Any:
        self.entered = time.perf_counter()
        return await self.inner.handle(*args, **kwargs)


@dataclass
class Bench:
    responder: TimedResponder
    store: SqlChatStore
    model: FirstDeltaModel
    parts: dict[str, PolicyParts]


@dataclass
class Times:
    """Per variant and message: receive -> first text (the loop's clock), receive -> the
    responder's handle, and the process's CPU time for the whole message (its reply included)."""

    first_text: dict[str, list[float]]
    intake: dict[str, list[float]]
    cpu: dict[str, list[float]]


async def one_message(bench: Bench, variant: str, n: int) -> tuple[float, float, float]:
    side = VARIANTS.index(variant)
    message = inbound(n, side)
    first = FirstText(bench.responder.settings.style.placeholder, bench.model.expect(message.text))

    def surfaces(_: EffectiveSettings | None = None) -> RecordingSurface:
        return RecordingSurface(limit=2000, name=f"p{n}.{side}", keep_writes=False,
                                observer=first.observe)  # fmt: skip

    loop = asyncio.get_running_loop()
    cpu = time.process_time()
    start, called = loop.time(), time.perf_counter()
    if variant == "direct":
        report = await bench.responder.inner.handle(PLATFORM, message, surfaces())
    else:
        report = await bench.parts[variant].intake.receive(message, origin(n, side), surfaces)
    cpu = time.process_time() - cpu
    assert report is not None and report.status is MessageStatus.COMPLETE, (variant, n, report)
    assert first.at is not None, (variant, n)
    return first.at - start, bench.responder.entered - called, cpu


async def build(tmp: str, interval: float, variants: list[str]) -> tuple[Bench, Any]:
    url = f"sqlite+aiosqlite:///{tmp}/bench.db"
    await migrate(url)
    engine = create_engine(url)
    store = SqlChatStore(engine)
    model = FirstDeltaModel()
    settings = ResponderSettings(
        model="bench", titles=False, idle_timeout=60.0, max_retries=0, history_limit=20
    )
    responder = TimedResponder(
        Responder(
            store=store, llm=model, scheduler=EditScheduler(interval=interval), settings=settings
        )
    )
    parts = {}
    for name in variants:
        if name == "direct":
            continue
        settled = policy_settings(name, interval)
        parts[name] = build_policy(settled, responder=cast(Responder, responder), store=store)
        await parts[name].policy.start()
        # Every variant answers with the bare responder's settings (the config's
        # max_output_tokens cannot be "none"), but for the large policy's overrides.
        defaults = parts[name].policy.rules.defaults.reply
        bare = replace(defaults, edit_interval=0.0, max_output_tokens=None)
        assert bare == settings.reply_defaults, defaults
    return Bench(responder, store, model, parts), engine


async def end_to_end(args: argparse.Namespace) -> Times:
    variants: list[str] = args.variants
    empty: list[dict[str, list[float]]] = [{name: [] for name in variants} for _ in range(3)]
    times = Times(*empty)
    order = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        bench, engine = await build(tmp, args.interval, variants)
        tune_garbage_collector()  # as `chat-bridge run` does once it is built
        try:
            for n in range(args.warmup + args.messages):
                turn = list(variants)
                order.shuffle(turn)
                for name in turn:
                    first_text, intake, cpu = await one_message(bench, name, n)
                    if n >= args.warmup:
                        times.first_text[name].append(first_text)
                        times.intake[name].append(intake)
                        times.cpu[name].append(cpu)
        finally:
            await bench.store.close()
            await engine.dispose()
    return times


# --- the policy alone ------------------------------------------------------------------------


def policy_alone(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Mean µs per `rules.denial` + `policy.resolve`, per policy, over places never seen (the
    cache cold: every call resolves and stores) and then the same places again (warm)."""
    from bridge.policy.policy import Policy

    calls = args.alone_calls
    result: dict[str, dict[str, float]] = {}
    for name in POLICIES:
        # A fresh policy per repetition so every cold pass starts from an empty cache; the best
        # of the repetitions is the cost without the machine's noise.
        cold, warm = [], []
        for rep in range(args.alone_repeats):
            policy = Policy(policy_settings(name, args.interval), _NO_STORE, time.monotonic)
            origins = [origin(n, len(VARIANTS) + rep) for n in range(calls)]
            cold.append(_per_call(policy, origins))
            warm.append(_per_call(policy, origins))
        denied = policy.rules.denial(origins[0])
        assert denied is None, denied
        effective = policy.resolve(origins[0])
        layers = len(set(effective.sources.values()))
        result[name] = {
            "cold_us": round(min(cold), 2),
            "cold_us_median": round(statistics.median(cold), 2),
            "warm_us": round(min(warm), 2),
            "warm_us_median": round(statistics.median(warm), 2),
            "layers_of_first_message": layers,
        }
    return result


def _per_call(policy: Any, origins: list[Origin]) -> float:
    denial: Callable[[Origin], Any] = policy.rules.denial
    resolve: Callable[[Origin], Any] = policy.resolve
    start = time.perf_counter()
    for where in origins:
        denial(where)
        resolve(where)
    return (time.perf_counter() - start) / len(origins) * 1e6


# The policy reads its store only in `start`, which the timing alone skips.
_NO_STORE = cast(ChatStore, object())


# --- report ----------------------------------------------------------------------------------


def stats(values: list[float], scale: float, digits: int) -> dict[str, float]:
    def r(value: float) -> float:
        return round(value * scale, digits)

    return {
        "p50": r(percentile(values, 0.50)),
        "p90": r(percentile(values, 0.90)),
        "p99": r(percentile(values, 0.99)),
        "max": r(max(values)),
        "mean": r(statistics.fmean(values)),
    }


def added(a: list[float], b: list[float], scale: float, digits: int, seed: int) -> dict[str, Any]:
    """What `a` adds to `b`: the differences of their percentiles and means, the median of the
    paired differences (message n one way against message n the other, sent within the same
    turn), and a bootstrap 95 % interval of the p99 difference (resampling the turns): how far
    the machine's noise alone moves it."""
    pick = random.Random(seed)
    count = len(a)
    spread = []
    for _ in range(1000):
        sample = [pick.randrange(count) for _ in range(count)]
        spread.append(
            percentile([a[i] for i in sample], 0.99) - percentile([b[i] for i in sample], 0.99)
        )
    spread.sort()

    def r(value: float) -> float:
        return round(value * scale, digits)

    return {
        "p50": r(percentile(a, 0.50) - percentile(b, 0.50)),
        "p99": r(percentile(a, 0.99) - percentile(b, 0.99)),
        "p99_95ci": [r(spread[25]), r(spread[974])],
        "mean": r(statistics.fmean(a) - statistics.fmean(b)),
        "paired_median": r(statistics.median(x - y for x, y in zip(a, b, strict=True))),
    }


def compared(
    times: dict[str, list[float]], scale: float, digits: int, seed: int
) -> dict[str, dict[str, Any]]:
    return {
        f"{a}_vs_{b}": added(times[a], times[b], scale, digits, seed)
        for a, b in COMPARISONS
        if a in times and b in times
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    limit_malloc_arenas()  # as `chat-bridge run` does
    alone = policy_alone(args)
    wall = time.perf_counter()
    times = asyncio.run(end_to_end(args))
    wall = time.perf_counter() - wall
    intake = {name: v for name, v in times.intake.items() if name != "direct"}
    return {
        "command": " ".join(["python -m bench.policy", *sys.argv[1:]]),
        "messages_per_variant": args.messages,
        "warmup_per_variant": args.warmup,
        "edit_interval_s": args.interval,
        "wall_s": round(wall, 1),
        # Milliseconds from calling Intake.receive (or Responder.handle) to the first platform
        # write that shows text.
        "first_text_ms": {name: stats(v, 1e3, 3) for name, v in times.first_text.items()},
        "first_text_added_ms": compared(times.first_text, 1e3, 3, args.seed),
        # Microseconds from calling Intake.receive to its call of Responder.handle.
        "intake_us": {name: stats(v, 1e6, 1) for name, v in intake.items()},
        "intake_added_us": compared(intake, 1e6, 1, args.seed),
        # The process's CPU milliseconds per message, from receive to the reply's end and its
        # usage write (sequential: nothing else runs meanwhile).
        "cpu_ms": {name: stats(v, 1e3, 3) for name, v in times.cpu.items()},
        "cpu_added_ms": compared(times.cpu, 1e3, 3, args.seed),
        # Microseconds per rules.denial + policy.resolve alone (best of the repeats; median).
        "policy_alone_us": alone,
    }


QUANTILES = ("p50", "p90", "p99", "max", "mean")


def show(result: dict[str, Any]) -> None:
    print(f"{result['messages_per_variant']} messages per variant, interleaved")
    for title, key in (
        ("receive -> first visible text", "first_text_ms"),
        ("receive -> responder.handle (the intake's own work)", "intake_us"),
        ("CPU per message, its reply included", "cpu_ms"),
    ):
        print(f"{title}, {key.rsplit('_', 1)[1]}")
        print(f"{'':<16}" + "".join(f"{q:>11}" for q in QUANTILES))
        for name, row in result[key].items():
            print(f"{name:<16}" + "".join(f"{row[q]:>11}" for q in QUANTILES))
        added_key = key.replace("_ms", "_added_ms").replace("_us", "_added_us")
        for name, more in result[added_key].items():
            low, high = more["p99_95ci"]
            print(f"{name:<16}{more['p50']:>11}{'':>11}{more['p99']:>11}{'':>11}"
                  f"{more['mean']:>11}   paired median {more['paired_median']}, "
                  f"p99 95% interval [{low}, {high}]")  # fmt: skip
    print("rules.denial + policy.resolve alone, us per call: best of repeats (median)")
    for name, alone in result["policy_alone_us"].items():
        print(f"{name:<16}cold {alone['cold_us']} ({alone['cold_us_median']})"
              f"   warm {alone['warm_us']} ({alone['warm_us_median']})")  # fmt: skip


def variants(text: str) -> list[str]:
    chosen = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"variants are {', '.join(VARIANTS)}")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="measured, per variant")
    parser.add_argument("--warmup", type=int, default=100, help="not measured, per variant")
    parser.add_argument(
        "--variants",
        type=variants,
        default=list(VARIANTS),
        help=f"comma-separated, of {', '.join(VARIANTS)} (default: all)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=0.05,
        help="streaming.edit_interval (paces the updates after the first)",
    )
    parser.add_argument("--alone-calls", type=int, default=4000, help="places per timing pass")
    parser.add_argument("--alone-repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1, help="of the variants' order per turn")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    result = run(args)
    show(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
