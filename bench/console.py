"""Admin console benchmark (issue #17): the pages' server time on a database of a million messages
(made by `bench.console_data`), and what the live page costs the bridge while it follows replies.

    python -m bench.console pages --url sqlite+aiosqlite:////tmp/cb/console-1m.db
    python -m bench.console pages --url postgresql+asyncpg://postgres@127.0.0.1:5432/console_bench
    python -m bench.console live --replies 200 --watchers 0,1,5 --rounds 3

`pages` serves the real `ConsoleServer` (its conversation pages and `UsageSection`, over the
store on `--url`) on 127.0.0.1 and requests each page over HTTP after logging in, one request at
a time, `--requests` times (fewer when a page is slow: at most `--budget` seconds a page, at
least 5): the server time is the time inside aiohttp's handler chain (a middleware put in front
of the console's own two), the client time the whole round trip.

`live` is section 1's responder benchmark (600-token replies at 20 tokens/s from the local LLM
server, the in-process platform fake, the SQL store on SQLite) in a fresh process per run:
without the console, then with a `LiveHub` fed by the responder and the console's aiohttp server
in the same process, with 0, 1 or 5 live pages open (`/live/events` streams read over HTTP by
another process, as browsers would). The bridge process's CPU for the replies, per
configuration, in rotated order round after round. Every result keeps the load average and any
test suite or benchmark seen running beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import ClientSession, CookieJar, web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.console_data import COMMON_TERM, RARE_TERM
from bench.tools import other_work
from storage import SqlChatStore, create_engine
from storage.models import as_utc

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "bench-console-password"
TARGET_MS = 150.0  # p95 server time of a page


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- the pages ---------------------------------------------------------------------------------


@dataclass(slots=True)
class PageTimes:
    name: str
    path: str
    server_ms: list[float] = field(default_factory=list)
    client_ms: list[float] = field(default_factory=list)
    size: int = 0
    load: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        ordered = sorted(self.server_ms)
        return {
            "path": self.path,
            "requests": len(ordered),
            "server_p50_ms": round(_percentile(ordered, 0.50), 1),
            "server_p95_ms": round(_percentile(ordered, 0.95), 1),
            "server_max_ms": round(ordered[-1], 1) if ordered else None,
            "client_p50_ms": round(_percentile(sorted(self.client_ms), 0.50), 1),
            "bytes": self.size,
            "load_before_after": self.load,
        }


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest rank (the p95 of 40 requests is the 38th)."""
    if not ordered:
        return float("nan")
    rank = max(1, round(q * len(ordered) + 0.5 - 1e-9))
    return ordered[min(len(ordered), rank) - 1]


async def choose_pages(engine: AsyncEngine) -> tuple[date, list[tuple[str, str]]]:
    """The pages to time, with filters taken from the data: a channel and a user of median
    activity, the median and the longest conversation, a cursor half way down the list."""
    async with engine.connect() as conn:

        async def one(sql: str) -> Any:
            return (await conn.execute(text(sql))).first()

        today = _as_date((await one("SELECT max(day) FROM token_usage"))[0])
        chats = int((await one("SELECT count(*) FROM chats"))[0])
        channel = (
            await one(
                "SELECT channel FROM (SELECT channel, count(*) AS n FROM chats GROUP BY channel) "
                "AS c ORDER BY n, channel LIMIT 1 OFFSET "
                "(SELECT count(DISTINCT channel) FROM chats) / 2"
            )
        )[0]
        user = (
            await one(
                "SELECT author_id FROM (SELECT author_id, count(*) AS n FROM messages "
                "WHERE role = 'user' GROUP BY author_id) AS u ORDER BY n, author_id LIMIT 1 "
                "OFFSET (SELECT count(DISTINCT author_id) FROM messages WHERE role = 'user') / 2"
            )
        )[0]
        sizes = "SELECT chat_id, count(*) AS n FROM messages GROUP BY chat_id ORDER BY"
        typical = (await one(f"{sizes} n, chat_id LIMIT 1 OFFSET {chats // 2}"))[0]
        longest = (await one(f"{sizes} n DESC, chat_id LIMIT 1"))[0]
        middle = await one(
            f"SELECT updated_at, id FROM chats ORDER BY updated_at DESC, id DESC "
            f"LIMIT 1 OFFSET {chats // 2}"
        )
    moment = as_utc(middle[0]) if not isinstance(middle[0], str) else None
    if moment is None:  # SQLite through text(): the stored text
        from datetime import UTC, datetime

        moment = datetime.fromisoformat(middle[0]).replace(tzinfo=UTC)
    week = {
        "since": (today - timedelta(45)).isoformat(),
        "until": (today - timedelta(39)).isoformat(),
    }
    ninety = {"since": (today - timedelta(89)).isoformat(), "until": today.isoformat()}
    pages = [
        ("list: first page", "/conversations"),
        ("list: platform=discord", "/conversations?platform=discord"),
        ("list: channel (median)", "/conversations?" + urlencode({"channel": channel})),
        ("list: user (median)", "/conversations?" + urlencode({"user": user})),
        ("list: status=failed", "/conversations?status=failed"),
        ("list: status=interrupted", "/conversations?status=interrupted"),
        ("list: one week, 6 weeks ago", "/conversations?" + urlencode(week)),
        (f"list: q={COMMON_TERM} (3 % of questions)", f"/conversations?q={COMMON_TERM}"),
        (f"list: q={RARE_TERM} (1 in 20,000)", f"/conversations?q={RARE_TERM}"),
        # The search index's hard cases: a trigram in half the messages, two common words
        # side by side in 1 message in 250, and three common words never side by side.
        ("list: q=the (half the messages)", "/conversations?q=the"),
        ("list: q=the cache (1 in 250)", "/conversations?" + urlencode({"q": "the cache"})),
        (
            "list: q=cache memory cpu (none)",
            "/conversations?" + urlencode({"q": "cache memory cpu"}),
        ),
        (
            "list: page at the middle (older cursor)",
            "/conversations?" + urlencode({"older": f"{moment.isoformat()},{middle[1]}"}),
        ),
        ("one conversation (median)", f"/conversations/{typical}"),
        ("one conversation (longest)", f"/conversations/{longest}"),
        ("usage: 30 days (default)", "/usage"),
        ("usage: 90 days", "/usage?" + urlencode(ninety)),
        ("usage: 30 days, platform=slack", "/usage?platform=slack"),
        ("usage CSV: 30 days", "/usage.csv"),
        ("usage CSV: 90 days", "/usage.csv?" + urlencode(ninety)),
    ]
    return today, pages


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def console_app(store: SqlChatStore, today: date, clocked: list[float]) -> web.Application:
    """The console as `chat-bridge run` builds it (conversations and usage), with a middleware
    in front of its own that notes each request's time in the server."""
    from adapters.console import ConsoleServer, hash_password
    from adapters.console.usage import UsageSection
    from bridge.console_settings import ConsoleSettings
    from bridge.policy.settings import LimitSettings

    limits = LimitSettings(user_daily_tokens=200_000, channel_daily_tokens=2_000_000)
    usage = UsageSection(store, limits=lambda: limits, today=lambda: today)
    settings = ConsoleSettings(enabled=True, password_hash=SecretStr(hash_password(PASSWORD)))
    app = ConsoleServer(settings, browser=store, sections=[usage]).app()

    @web.middleware
    async def timed(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        began = time.perf_counter()
        try:
            return await handler(request)
        finally:
            clocked.append((time.perf_counter() - began) * 1000)

    app.middlewares.insert(0, timed)
    return app


async def log_in(client: ClientSession, base: str) -> None:
    page = await (await client.get(f"{base}/login")).text()
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token is not None, page[:200]
    answer = await client.post(
        f"{base}/login",
        data={"password": PASSWORD, "csrf": token.group(1)},
        allow_redirects=False,
    )
    assert answer.status == 303, answer.status


async def time_pages(
    url: str, *, requests: int, budget: float, only: str | None = None, tune_gc: bool = True
) -> dict[str, Any]:
    engine = create_engine(url)
    store = SqlChatStore(engine)
    seen_before = other_work()
    try:
        today, pages = await choose_pages(engine)
        if only:
            pages = [page for page in pages if only in page[0]]
        clocked: list[float] = []
        server = TestServer(console_app(store, today, clocked), host="127.0.0.1")
        await server.start_server()
        if tune_gc:  # as `chat-bridge run` does once the bridge is built
            from bridge.app import tune_garbage_collector

            tune_garbage_collector()
        base = str(server.make_url("")).rstrip("/")
        results: list[PageTimes] = []
        try:
            async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as client:
                await log_in(client, base)
                for name, path in pages:
                    results.append(await _time_page(client, base, name, path, clocked,
                                                    requests=requests, budget=budget))  # fmt: skip
                    print(_row(results[-1]), file=sys.stderr, flush=True)
        finally:
            await server.close()
        counts = await _counts(engine)
    finally:
        await engine.dispose()
    return {
        "command": " ".join(["python -m bench.console", *sys.argv[1:]]),
        "database": engine.dialect.name,
        "data": counts,
        "today": today.isoformat(),
        "target_p95_ms": TARGET_MS,
        "gc_tuned": tune_gc,
        "other_work_seen": sorted(set(seen_before) | set(other_work())),
        "pages": {result.name: result.figures() for result in results},
    }


async def _time_page(
    client: ClientSession,
    base: str,
    name: str,
    path: str,
    clocked: list[float],
    *,
    requests: int,
    budget: float,
) -> PageTimes:
    times = PageTimes(name, path, load=[load_average()])
    began = time.perf_counter()
    for n in range(requests + 1):
        clocked.clear()
        sent = time.perf_counter()
        async with client.get(base + path, allow_redirects=False) as answer:
            body = await answer.read()
            assert answer.status == 200, (path, answer.status, body[:200])
        if n == 0:
            continue  # the warm-up: templates compiled, the database's pages read once
        times.client_ms.append((time.perf_counter() - sent) * 1000)
        times.server_ms.append(clocked[-1])
        times.size = len(body)
        if n >= 5 and time.perf_counter() - began > budget:
            break
    times.load.append(load_average())
    return times


async def _counts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        found = {}
        for table in ("chats", "messages", "token_usage"):
            found[table] = int(
                (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
            )
    return found


def _row(times: PageTimes) -> str:
    f = times.figures()
    return (
        f"{times.name:<44}{f['requests']:>5}{f['server_p50_ms']:>10}{f['server_p95_ms']:>10}"
        f"{f['server_max_ms']:>10}  load {' -> '.join(times.load)}"
    )


def pages_markdown(report: dict[str, Any]) -> str:
    lines = [
        "| page | requests | p50 (ms) | p95 (ms) | max (ms) | p95 < 150 ms |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, f in report["pages"].items():
        met = "met" if f["server_p95_ms"] < TARGET_MS else "**missed**"
        lines.append(f"| {name} | {f['requests']} | {f['server_p50_ms']} | {f['server_p95_ms']} | "
                     f"{f['server_max_ms']} | {met} |")  # fmt: skip
    return "\n".join(lines)


# --- the live page -----------------------------------------------------------------------------


# What a config with both platforms, an OpenAI key and the console holds (their shapes).
CONFIG_SECRETS = (
    "xoxb-" + "1234567890-" * 4, "xapp-1-" + "A0123456789-" * 5, "sk-proj-" + "a1B2c3D4" * 6,
    "MTA" + "xYz0" * 17 + ".Gh1jKl." + "m" * 27, "console-session-" + "0f" * 16,
)  # fmt: skip


async def live_run(args: argparse.Namespace) -> dict[str, Any]:
    """One run of the responder benchmark in this process, with or without the console."""
    from adapters.console import ConsoleServer, hash_password
    from adapters.console.live import LiveHub, LiveSection
    from bench.responder import bench_world, message, recording_surface
    from bridge.console_settings import ConsoleSettings
    from bridge.domain import MessageStatus
    from bridge.redaction import Redactor
    from bridge.responder import Responder, ResponderSettings
    from bridge.scheduler import EditScheduler

    spent = {"feed_s": 0.0, "events_s": 0.0}
    async with bench_world(args) as (store, model):
        hub = LiveHub() if args.watchers >= 0 else None
        console = None
        watchers: asyncio.subprocess.Process | None = None
        if hub is not None:
            settings = ConsoleSettings(
                enabled=True, port=args.port, password_hash=SecretStr(hash_password(PASSWORD))
            )
            # Redacted as the bridge redacts (its config's tokens and keys), on every version.
            section = LiveSection(hub, redact=Redactor(CONFIG_SECRETS).redact)
            console = ConsoleServer(settings, browser=store, sections=[section])
            await console.start()
            # The live path's own work, timed where it runs (the event loop's thread): what the
            # responder's calls cost the hub, and what making the pages' events costs.
            for name in ("started", "shown", "ended"):
                setattr(hub, name, _thread_timed(getattr(hub, name), spent, "feed_s"))
            section._encode = _thread_timed(section._encode, spent, "events_s")  # type: ignore[method-assign]
        if hub is not None and args.watchers > 0:
            watchers = await _start_watchers(f"http://127.0.0.1:{args.port}", args.watchers)
        responder = Responder(
            store=store,
            llm=model,
            scheduler=EditScheduler(interval=args.interval, clock=time.perf_counter),
            settings=ResponderSettings(
                model="bench", titles=False, idle_timeout=60.0, max_retries=0, history_limit=20
            ),
            feed=hub,
        )
        surfaces = [recording_surface(i, args, model.meter, " ▌") for i in range(args.replies)]
        load_before = load_average()
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        reports = await asyncio.gather(
            *(responder.handle("bench", message(i), surfaces[i]) for i in range(args.replies))
        )
        cpu = time.process_time() - cpu_before
        wall = time.perf_counter() - wall_before
        load_after = load_average()
        assert all(r is not None and r.status is MessageStatus.COMPLETE for r in reports)
        # The last events (the replies' ends) reach the pages before they are counted.
        await asyncio.sleep(1.0)
        received = await _stop_watchers(watchers) if watchers is not None else None
        if console is not None:
            await console.stop()
    meter = model.meter
    peak, _ = meter.concurrency()
    return {
        "console": hub is not None,
        "watchers": max(args.watchers, 0),
        "replies": args.replies,
        "cpu_s": round(cpu, 3),
        "cpu_per_reply_ms": round(cpu / args.replies * 1000, 2),
        "wall_s": round(wall, 2),
        "streaming_at_once": peak,
        "lag_p99_ms": round(meter.lags.percentile(0.99) * 1000, 1),
        "update_gap_p99_ms": round(meter.gaps.percentile(0.99) * 1000, 1),
        "pages_received": received,
        "load_before_after": [load_before, load_after],
        # CPU of the live path's own calls (thread time, so only their work is counted).
        "live_path_cpu_s": {key: round(value, 6) for key, value in spent.items()}
        if hub is not None
        else None,
    }


def _thread_timed(function: Any, spent: dict[str, float], key: str) -> Any:
    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent[key] += time.thread_time() - began

    return timed


async def _start_watchers(base: str, count: int) -> asyncio.subprocess.Process:
    command = ["-m", "bench.console", "watch", "--base", base, "--streams", str(count)]
    process = await asyncio.create_subprocess_exec(
        sys.executable, *command, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    line = await process.stdout.readline()
    if not line.startswith(b"ready"):
        raise RuntimeError(f"the live pages did not open: {line!r}")
    return process


async def _stop_watchers(process: asyncio.subprocess.Process) -> dict[str, Any]:
    process.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def watch(base: str, streams: int) -> dict[str, Any]:
    """What browsers with the live page open do: log in once, then read `streams` event streams
    until told to stop (SIGTERM). Runs in its own process: its CPU is not the bridge's."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    counts = {"streams": streams, "events": 0, "resets": 0, "bytes": 0}
    opened = 0
    ready = asyncio.Event()

    async def read(client: ClientSession) -> None:
        nonlocal opened
        async with client.get(f"{base}/live/events", timeout=None) as answer:
            assert answer.status == 200, answer.status
            opened += 1
            if opened == streams:
                ready.set()
            async for line in answer.content:
                counts["bytes"] += len(line)
                if line.startswith(b"event: "):
                    counts["events"] += 1
                    counts["resets"] += line.startswith(b"event: reset")

    async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as client:
        await log_in(client, base)
        tasks = [asyncio.create_task(read(client)) for _ in range(streams)]
        await ready.wait()
        print("ready", flush=True)
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return counts


def live(args: argparse.Namespace) -> dict[str, Any]:
    from bench.responder import llm_server

    configs = ["none", *(f"live{n}" for n in _numbers(args.watchers))]
    rounds: list[dict[str, Any]] = []
    seen = set(other_work())
    with llm_server(args.tokens, args.rate) as url:
        for number in range(args.rounds):
            shift = number % len(configs)
            order = configs[shift:] + configs[:shift]
            results = {}
            for config in order:
                print(f"round {number + 1}: {config} ...", file=sys.stderr, flush=True)
                results[config] = _live_apart(args, url, config)
                seen |= set(other_work())
                print(f"  {json.dumps(results[config])}", file=sys.stderr, flush=True)
            rounds.append({config: results[config] for config in configs})
    return {
        "command": " ".join(["python -m bench.console", *sys.argv[1:]]),
        "setting": f"{args.replies} concurrent replies of {args.tokens} tokens at {args.rate} "
        f"tokens/s, edit_interval {args.interval} s, SQLite (section 1's benchmark)",
        "other_work_seen": sorted(seen),
        "rounds": rounds,
        "summary": live_summary(rounds, configs),
    }


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _live_apart(args: argparse.Namespace, url: str, config: str) -> dict[str, Any]:
    watchers = -1 if config == "none" else int(config.removeprefix("live"))
    command = [sys.executable, "-m", "bench.console", "live-run", "--llm-url", url]
    command += ["--replies", str(args.replies), "--watchers", str(watchers)]
    command += ["--interval", str(args.interval), "--port", str(args.port)]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{config} failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def live_summary(rounds: list[dict[str, Any]], configs: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for config in configs:
        cpu = [r[config]["cpu_s"] for r in rounds]
        summary[config] = {"cpu_s": cpu, "cpu_s_median": statistics.median(cpu)}
        if config != "none":
            extra = [r[config]["cpu_s"] / r["none"]["cpu_s"] - 1 for r in rounds]
            summary[config]["extra_cpu_pct_per_round"] = [round(e * 100, 1) for e in extra]
            summary[config]["extra_cpu_pct_of_medians"] = round(
                (statistics.median(cpu) / summary["none"]["cpu_s_median"] - 1) * 100, 1
            )
            own = [sum((r[config].get("live_path_cpu_s") or {}).values()) for r in rounds]
            summary[config]["live_path_cpu_s_median"] = round(statistics.median(own), 6)
            summary[config]["live_path_pct_of_none"] = round(
                statistics.median(own) / summary["none"]["cpu_s_median"] * 100, 2
            )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pages = commands.add_parser("pages", help="server time of each page")
    pages.add_argument("--url", required=True)
    pages.add_argument("--requests", type=int, default=40)
    pages.add_argument("--budget", type=float, default=30.0, help="seconds a page at most")
    pages.add_argument("--only", help="pages whose name contains this")
    pages.add_argument("--json", help="default: docs/bench/console-pages-<database>.json")
    pages.add_argument("--no-save", action="store_true")
    pages.add_argument(
        "--default-gc", action="store_true", help="leave the garbage collector as CPython sets it"
    )
    for name in ("live", "live-run"):
        run = commands.add_parser(name)
        run.add_argument("--replies", type=int, default=200)
        run.add_argument("--tokens", type=int, default=600)
        run.add_argument("--rate", type=float, default=20.0)
        run.add_argument("--interval", type=float, default=1.0)
        run.add_argument("--latency", type=float, default=0.0)
        run.add_argument("--port", type=int, default=9173)
    live_parser = commands.choices["live"]
    live_parser.add_argument("--watchers", default="0,1,5", help="open live pages per config")
    live_parser.add_argument("--rounds", type=int, default=3)
    live_parser.add_argument("--json", default=str(ROOT / "docs/bench/console-live.json"))
    live_parser.add_argument("--no-save", action="store_true")
    live_run_parser = commands.choices["live-run"]
    live_run_parser.add_argument("--llm-url", required=True)
    live_run_parser.add_argument("--watchers", type=int, default=-1, help="-1: no console")
    watch_parser = commands.add_parser("watch")
    watch_parser.add_argument("--base", required=True)
    watch_parser.add_argument("--streams", type=int, default=1)
    args = parser.parse_args()
    if args.command == "pages":
        report = asyncio.run(
            time_pages(
                args.url,
                requests=args.requests,
                budget=args.budget,
                only=args.only,
                tune_gc=not args.default_gc,
            )
        )
        print(pages_markdown(report))
        path = args.json or str(ROOT / f"docs/bench/console-pages-{report['database']}.json")
        if not args.no_save:
            Path(path).write_text(json.dumps(report, indent=2) + "\n")
    elif args.command == "live":
        report = live(args)
        print(json.dumps(report["summary"], indent=2))
        if not args.no_save:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    elif args.command == "live-run":
        print(json.dumps(asyncio.run(live_run(args))))
    else:
        print(json.dumps(asyncio.run(watch(args.base, args.streams))))


if __name__ == "__main__":
    main()
