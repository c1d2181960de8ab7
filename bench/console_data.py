"""Fills a database with the console benchmark's workload (issue #17): about a million stored
messages in the shape a busy deployment leaves them, and the `token_usage` daily counters the
bridge would have written for its replies (the monthly ones, `token_usage_months`, follow from
them: the database's triggers add each daily row to its month as it goes in).

    python -m bench.console_data --url sqlite+aiosqlite:///bench-console.db --fresh
    python -m bench.console_data --fresh \
        --url postgresql+asyncpg://postgres@127.0.0.1:5432/console_bench

The shape (for 1,000,000 messages): 20,000 chats on Slack and Discord over 7 workspaces and
guilds and 500 channels (each channel one channel-level chat, long, and threads), 5,000 users
(some far busier than others), 90 days; question/reply pairs, 2 % of replies failed, 1 % stopped,
0.2 % interrupted, 1.5 % with a tool round; the first `--uncounted-days` days as counted before
revision 0008 (no failed replies or 429s in the counters: the usage page reads those days'
failures from the messages). The schema comes from the project's migrations; rows are written in
bulk (executemany on SQLite, COPY on PostgreSQL) with the messages' secondary indexes built after
the load. Deterministic for a given `--seed`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.engine import make_url
from sqlalchemy.schema import CreateIndex

from storage import migrate
from storage.database import sqlite_path
from storage.models import MessageRow

MESSAGES = cast(Table, MessageRow.__table__)
CHAT_COLUMNS = ("id", "platform", "workspace", "channel", "thread", "title", "settings",
                "context_floor", "created_at", "updated_at")  # fmt: skip
MESSAGE_COLUMNS = ("id", "chat_id", "role", "content", "author_id", "platform_message_id",
                   "platform_message_ids", "reply_to_id", "response_number", "tool_step",
                   "status", "error", "model", "prompt_tokens", "completion_tokens", "owner",
                   "metadata", "created_at", "updated_at")  # fmt: skip
USAGE_COLUMNS = ("day", "scope", "platform", "key", "tokens", "replies", "failed", "rate_limited")
# What the benchmark searches for: a word in about 3 % of questions, and one in about 1 of
# 20,000 messages (the text search's worst realistic case: few conversations match).
COMMON_TERM = "deploy"
RARE_TERM = "flamegraph"
MODELS = ("gpt-4o-mini", "gpt-4o", "llama-3.1-70b")
OWNERS = ("bridge-a1b2c3", "bridge-d4e5f6")
ERRORS = (
    "the model service returned an error: 500 Internal Server Error",
    "the model stopped answering (no delta for 60 s)",
    "the model service refused the request: 429 Too Many Requests",
    "context length exceeded: 131072 tokens",
)
CHUNK = 20_000  # question/reply pairs written per transaction
BEFORE_SEARCH_INDEX = "0010"  # the revision before the text search index (0011)
_WORDS = (
    "the a to of and in is it you that for on with this be are as can not your have at or if "
    "from by but we will an use do so what there which one all when should make how would more "
    "config server error request file user token model channel thread reply message database "
    "query index table column value function class method test build release branch commit "
    "merge review docker image container volume network port proxy cache memory cpu disk log "
    "timeout retry limit quota budget latency stream event socket client api key secret "
    "password login session cookie header json yaml python rust typescript java script module "
    "package version upgrade migration schema backup restore cluster node pod service replica "
    "metric alert dashboard graph chart report invoice customer account order payment refund "
    "email meeting calendar schedule deadline project plan roadmap sprint ticket issue bug fix "
    "feature design layout page button form field input output result answer question example"
).split()


@dataclass(frozen=True, slots=True)
class Shape:
    """How much to make: everything scales with `messages` (the other sizes are for 1,000,000)."""

    messages: int = 1_000_000
    days: int = 90
    uncounted_days: int = 20
    seed: int = 17
    end: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))

    @property
    def chats(self) -> int:
        return max(8, self.messages // 50)

    @property
    def channels(self) -> int:
        return min(500, max(4, self.messages // 2000))

    @property
    def users(self) -> int:
        return min(5000, max(10, self.messages // 200))


@dataclass(slots=True)
class Channel:
    platform: str
    workspace: str
    channel: str
    users: list[str]  # the workspace's users who write here


@dataclass(slots=True)
class ChatPlan:
    id: int
    channel: Channel
    thread: str
    users: list[str]
    pairs: int
    asked: int = 0  # pairs written so far
    title: str | None = None


@dataclass(slots=True)
class Written:
    chats: int = 0
    messages: int = 0
    usage_rows: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


class Workload:
    """The rows, made in the order the bridge would have written them (ids grow with time)."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.rng = random.Random(shape.seed)
        self.start = shape.end - timedelta(days=shape.days)
        self.first_counted = (self.start + timedelta(days=shape.uncounted_days)).date()
        self.sentences = self._sentences(4000)
        self.channels = self._channels()
        self.chats = self._chats()
        # (day, scope, platform, key) -> [tokens, replies, failed, rate_limited]
        self.usage: dict[tuple[date, str, str, str], list[int]] = {}
        self.next_id = 1

    # --- the places ----------------------------------------------------------------------------

    def _sentences(self, count: int) -> list[str]:
        rng = self.rng
        made = []
        for _ in range(count):
            words = rng.choices(_WORDS, k=rng.randint(6, 18))
            words[0] = words[0].capitalize()
            made.append(" ".join(words) + rng.choice((".", ".", ".", ":", "!")))
        return made

    def _channels(self) -> list[Channel]:
        rng, shape = self.rng, self.shape
        workspaces = [("slack", f"T0{n}ACME{n}") for n in range(1, 4)]
        workspaces += [("discord", str(880_000_000_000_000_000 + n)) for n in range(1, 5)]
        users: dict[tuple[str, str], list[str]] = {place: [] for place in workspaces}
        for n in range(shape.users):
            platform, workspace = workspaces[n % len(workspaces)]
            if platform == "slack":
                users[(platform, workspace)].append(f"U{n:08d}X")
            else:
                users[(platform, workspace)].append(str(300_000_000_000_000_000 + n * 7919))
        channels = []
        for n in range(shape.channels):
            platform, workspace = workspaces[n % len(workspaces)]
            pool = users[(platform, workspace)]
            members = rng.sample(pool, min(len(pool), rng.randint(20, 120)))
            name = f"C{n:07d}BENCH" if platform == "slack" else str(990_000_000_000_000_000 + n)
            channels.append(Channel(platform, workspace, name, members))
        return channels

    def _chats(self) -> list[ChatPlan]:
        """Each channel's channel-level chat (long) and threads; pair counts scaled so that the
        messages come to about `shape.messages`."""
        rng, shape = self.rng, self.shape
        popularity = [rng.paretovariate(1.2) for _ in self.channels]
        plans: list[ChatPlan] = []
        weights: list[float] = []
        for n in range(shape.chats):
            if n < len(self.channels):
                channel, thread = self.channels[n], ""
                users = rng.sample(channel.users, min(len(channel.users), rng.randint(5, 30)))
                weights.append(rng.lognormvariate(math.log(120), 0.6))
            else:
                channel = rng.choices(self.channels, weights=popularity)[0]
                thread = (
                    f"17{rng.randint(10**7, 10**8 - 1)}.{n:06d}"
                    if channel.platform == "slack"
                    else str(1_200_000_000_000_000_000 + n)
                )
                users = rng.sample(channel.users, min(len(channel.users), rng.choice((1, 1, 2, 3))))
                weights.append(rng.lognormvariate(math.log(14), 0.9))
            plans.append(ChatPlan(n + 1, channel, thread, users, 0))
        # A pair is 2 messages, 2.04 with the tool rounds of 1.5 % of them (2-3 rows each).
        pairs_wanted = shape.messages / 2.04
        scale = pairs_wanted / sum(weights)
        for plan, weight in zip(plans, weights, strict=True):
            plan.pairs = max(1, round(weight * scale))
        return plans

    # --- the rows ------------------------------------------------------------------------------

    def pair_times(self) -> list[tuple[float, int]]:
        """(moment, chat index) of every question, in time order."""
        rng = self.rng
        span = (self.shape.end - self.start).total_seconds() - 3600
        base = self.start.timestamp()
        moments: list[tuple[float, int]] = []
        for index, plan in enumerate(self.chats):
            if plan.thread == "":  # a channel's own chat: questions all along the 90 days
                for _ in range(plan.pairs):
                    moments.append((base + rng.random() * span, index))
                continue
            at = base + rng.random() * span * 0.98
            for _ in range(plan.pairs):
                moments.append((at, index))
                # Mostly minutes apart; now and then the next day.
                gap = rng.expovariate(1 / 240) if rng.random() > 0.03 else rng.uniform(4e4, 3e5)
                at = min(at + 20 + gap, base + span)
        moments.sort()
        return moments

    def chunks(self, moments: Sequence[tuple[float, int]]) -> Iterator[list[tuple[Any, ...]]]:
        """The messages, CHUNK pairs at a time (neutral values: datetimes, JSON as text)."""
        for offset in range(0, len(moments), CHUNK):
            rows: list[tuple[Any, ...]] = []
            for at, index in moments[offset : offset + CHUNK]:
                self._pair(rows, at, self.chats[index])
            yield rows

    def _text(self, low: int, high: int) -> str:
        return " ".join(self.rng.choices(self.sentences, k=self.rng.randint(low, high)))

    def _pair(self, rows: list[tuple[Any, ...]], at: float, plan: ChatPlan) -> None:
        rng = self.rng
        channel = plan.channel
        slack = channel.platform == "slack"
        asked = plan.asked
        plan.asked += 1
        author = rng.choice(plan.users)
        question = self._text(1, 3)
        roll = rng.random()
        if roll < 0.03:
            question = f"Why does the {COMMON_TERM} fail? {question}"
        elif roll < 0.03 + 1 / 10_000:
            question = f"{question} Attached the {RARE_TERM} of the slow request."
        qid, rid = self.next_id, self.next_id + 1
        self.next_id += 2
        asked_at = _moment(at)
        meta: dict[str, Any] = {"author_name": f"user {author[-5:]}"}
        if rng.random() < 0.01:
            meta["attachments"] = [{"name": "screenshot.png", "size": 182_331}]
        pid = f"{int(at)}.{qid % 1_000_000:06d}" if slack else str(1_300_000_000_000_000_000 + qid)
        rows.append((qid, plan.id, "user", question, author, pid, json.dumps([pid]), None, 0, 0,
                     "complete", None, None, None, None, OWNERS[qid % 2], json.dumps(meta),
                     asked_at, _moment(at + 0.8)))  # fmt: skip
        # The reply: its outcome, text, tokens.
        roll = rng.random()
        status, error = "complete", None
        text = self._text(3, 14)
        if roll < 0.02:
            status, error = "failed", rng.choice(ERRORS)
            text = "" if rng.random() < 0.5 else text[: rng.randint(20, 300)]
        elif roll < 0.03:
            status = "stopped"
            text = text[: rng.randint(50, 600)]
        elif roll < 0.032:
            status = "interrupted"
            text = text[: rng.randint(50, 600)]
        model = MODELS[0] if rng.random() < 0.8 else rng.choice(MODELS[1:])
        prompt = 90 + min(asked, 10) * 260 + len(question) // 4
        completion = len(text) // 4
        reported = status in ("complete", "stopped")
        ended = at + 2 + len(text) / 80
        rpid = (
            f"{int(at) + 1}.{rid % 1_000_000:06d}"
            if slack
            else str(1_300_000_000_000_000_000 + rid)
        )
        tools = rng.random() < 0.015
        rows.append((rid, plan.id, "assistant", text, None, rpid, json.dumps([rpid]), qid, 0, 0,
                     status, error, model, prompt if reported else None,
                     completion if reported else None, OWNERS[qid % 2], "{}", _moment(at + 0.3),
                     _moment(ended)))  # fmt: skip
        if tools:
            self._tool_round(rows, at, plan, qid, model)
        if status != "interrupted":  # an interrupted reply was never counted
            tokens = prompt + completion if reported or text else 0
            self._count(at, channel, author, tokens, status == "failed")

    def _tool_round(
        self, rows: list[tuple[Any, ...]], at: float, plan: ChatPlan, qid: int, model: str
    ) -> None:
        calls = [
            {"id": f"call_{qid}_{n}", "name": self.rng.choice(("search_docs", "get_ticket")),
             "arguments": json.dumps({"query": self._text(1, 1)[:60]})}
            for n in range(self.rng.choice((1, 1, 2)))
        ]  # fmt: skip
        moment = _moment(at + 1.5)
        step = 1
        first = self.next_id
        rows.append((first, plan.id, "assistant", "", None, None, "[]", qid, 0, step,
                     "complete", None, model, None, None, OWNERS[qid % 2],
                     json.dumps({"tool_calls": calls}), moment, moment))  # fmt: skip
        for offset, call in enumerate(calls, start=1):
            result = {"tool_call_id": call["id"], "name": call["name"], "error": None,
                      "seconds": round(self.rng.uniform(0.05, 2.0), 3)}  # fmt: skip
            rows.append((first + offset, plan.id, "tool", self._text(2, 6), None, None, "[]",
                         qid, 0, step + offset, "complete", None, model, None, None,
                         OWNERS[qid % 2], json.dumps(result), moment, moment))  # fmt: skip
        self.next_id += 1 + len(calls)

    def _count(self, at: float, channel: Channel, user: str, tokens: int, failed: bool) -> None:
        """As the intake's `add_usage`: the user's and the channel's day, and from revision 0008
        on the platform's day with its failed replies and 429s."""
        day = datetime.fromtimestamp(at, UTC).date()
        counted = day >= self.first_counted
        limited = self.rng.choice((1, 1, 2, 4)) if self.rng.random() < 0.004 else 0
        scopes = [("user", user), ("channel", channel.channel)]
        if counted:
            scopes.append(("platform", ""))
        for scope, key in scopes:
            row = self.usage.setdefault((day, scope, channel.platform, key), [0, 0, 0, 0])
            row[0] += tokens
            row[1] += 1
            if counted:
                row[2] += int(failed)
                row[3] += limited

    def chat_rows(self, moments: Sequence[tuple[float, int]]) -> list[tuple[Any, ...]]:
        first: dict[int, float] = {}
        last: dict[int, float] = {}
        for at, index in moments:
            first.setdefault(index, at)
            last[index] = at
        rows = []
        for index, plan in enumerate(self.chats):
            if index not in first:
                continue
            c = plan.channel
            # The bridge's titles (`llm.titles`): a few words on what was asked first.
            words = self.rng.choice(self.sentences).split()[:6]
            plan.title = " ".join(words) if self.rng.random() < 0.7 else None
            rows.append((plan.id, c.platform, c.workspace, c.channel, plan.thread, plan.title,
                         "{}", 0, _moment(first[index]), _moment(last[index])))  # fmt: skip
        return rows

    def usage_rows(self) -> list[tuple[Any, ...]]:
        return [(day, scope, platform, key, *counts)
                for (day, scope, platform, key), counts in sorted(self.usage.items())]  # fmt: skip


def _moment(epoch: float) -> datetime:
    return datetime.fromtimestamp(round(epoch, 6), UTC)


# --- writing -----------------------------------------------------------------------------------


class SqliteTarget:
    """sqlite3 in a worker thread: a transaction per chunk, values in the store's text formats
    (naive UTC times, ISO days)."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._indexes: list[str] = []

    async def begin(self) -> None:
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("PRAGMA cache_size=-400000")
        self._indexes = [str(CreateIndex(i).compile(dialect=sqlite.dialect())) for i in _INDEXES]
        for index in _INDEXES:
            self._db.execute(f"DROP INDEX {index.name}")

    async def insert(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        await asyncio.to_thread(self._insert, table, columns, rows)

    def _insert(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        marks = ", ".join("?" for _ in columns)
        converted = [tuple(_sqlite_value(value) for value in row) for row in rows]
        self._db.execute("BEGIN")
        self._db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                             converted)  # fmt: skip
        self._db.execute("COMMIT")

    async def finish(self, report: Written) -> None:
        began = time.perf_counter()
        for statement in self._indexes:
            await asyncio.to_thread(self._db.execute, statement)
        report.seconds["indexes"] = round(time.perf_counter() - began, 1)
        # No ANALYZE: the bridge never runs it, so SQLite plans without statistics in use too.
        await asyncio.to_thread(self._db.close)


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    return value


class PostgresTarget:
    """asyncpg's COPY; then the indexes, the id sequences moved past the ids written, and
    VACUUM ANALYZE (what autovacuum does after a load)."""

    def __init__(self, url: str) -> None:
        self._dsn = postgres_dsn(url)
        self._db: Any = None
        self._indexes: list[str] = []

    async def begin(self) -> None:
        import asyncpg

        self._db = await asyncpg.connect(self._dsn)
        dialect = PGDialect()  # type: ignore[no-untyped-call]
        self._indexes = [str(CreateIndex(i).compile(dialect=dialect)) for i in _INDEXES]
        for index in _INDEXES:
            await self._db.execute(f"DROP INDEX {index.name}")

    async def insert(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        await self._db.copy_records_to_table(table, records=rows, columns=list(columns))

    async def finish(self, report: Written) -> None:
        began = time.perf_counter()
        for statement in self._indexes:
            await self._db.execute(statement)
        report.seconds["indexes"] = round(time.perf_counter() - began, 1)
        for table in ("chats", "messages"):
            await self._db.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        began = time.perf_counter()
        await self._db.execute("VACUUM ANALYZE")
        report.seconds["vacuum_analyze"] = round(time.perf_counter() - began, 1)
        await self._db.close()


_INDEXES = sorted(MESSAGES.indexes, key=lambda index: str(index.name))


def postgres_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def fresh_database(url: str) -> None:
    """An empty database at `url`: the SQLite file removed, or the PostgreSQL database dropped
    and created again (through the server's `postgres` database)."""
    await drop_database(url, create=True)


async def drop_database(url: str, *, create: bool = False) -> None:
    """Remove the SQLite file or drop the PostgreSQL database (never the tests' `test`)."""
    path = sqlite_path(url)
    if path is not None:
        await asyncio.to_thread(_unlink_sqlite, path)
        return
    import asyncpg

    parsed = make_url(url)
    name = parsed.database
    if not name or name in ("postgres", "test"):
        raise SystemExit(f"refusing to drop database {name!r}: name a database of your own")
    server = parsed.set(database="postgres").render_as_string(hide_password=False)
    admin = await asyncpg.connect(postgres_dsn(server))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


def _unlink_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def fill(url: str, shape: Shape, *, fresh: bool = False, quiet: bool = False) -> Written:
    """Migrate the database at `url` and write the workload into it (it must hold no chats)."""
    if fresh:
        await fresh_database(url)
    # The schema without revision 0011's text search index, which would be written row by
    # row during the load (8 times slower on SQLite); the migration builds it afterwards from
    # every message at once, as an upgrade of a database with history does.
    await migrate(url, BEFORE_SEARCH_INDEX)
    path = sqlite_path(url)
    target: SqliteTarget | PostgresTarget = (
        SqliteTarget(path) if path is not None else PostgresTarget(url)
    )
    report = Written()
    began = time.perf_counter()
    workload = Workload(shape)
    moments = workload.pair_times()
    chats = workload.chat_rows(moments)
    await target.begin()
    await target.insert("chats", CHAT_COLUMNS, chats)
    report.chats = len(chats)
    for rows in workload.chunks(moments):
        await target.insert("messages", MESSAGE_COLUMNS, rows)
        report.messages += len(rows)
        if not quiet:
            print(f"  {report.messages:,} messages", file=sys.stderr, flush=True)
    usage = workload.usage_rows()
    await target.insert("token_usage", USAGE_COLUMNS, usage)
    report.usage_rows = len(usage)
    report.seconds["rows"] = round(time.perf_counter() - began, 1)
    await target.finish(report)
    indexed = time.perf_counter()
    await migrate(url)
    report.seconds["search_index"] = round(time.perf_counter() - indexed, 1)
    report.seconds["total"] = round(time.perf_counter() - began, 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="an SQLite file or a PostgreSQL database")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--uncounted-days", type=int, default=20)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--fresh", action="store_true", help="drop and recreate the database")
    args = parser.parse_args()
    shape = Shape(args.messages, args.days, args.uncounted_days, args.seed)
    report = asyncio.run(fill(args.url, shape, fresh=args.fresh))
    print(json.dumps({"chats": report.chats, "messages": report.messages,
                      "usage_rows": report.usage_rows, "seconds": report.seconds}))  # fmt: skip


if __name__ == "__main__":
    main()
