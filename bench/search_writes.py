"""What the conversations' text search index (revision 0011) costs the write path.

    python -m bench.search_writes --replies 300 --rounds 3
    python -m bench.search_writes --replies 300 --rounds 3 \
        --url postgresql+asyncpg://postgres@127.0.0.1:5432/test

A reply's writes as the bridge makes them, through `SqlChatStore`: the user's message (a question
of about 370 characters), the reply's row, 30 progress saves of a growing text and the final
save (about 1,500 characters), then the question marked answered. Each configuration writes into
a fresh database at the head revision: `indexed` as migrated, `unindexed` with the index taken
out (SQLite: the FTS5 table and its triggers; PostgreSQL: the pg_trgm index). Rounds alternate
the two; the figures are wall and process CPU time per reply (on PostgreSQL also the server's
CPU, from /proc: run it on the database's machine) and the database's size after.
`--concurrent` replies are written at once (the store batches concurrent writers' commits, as
it does for the bridge's concurrent replies).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from bench.console_data import _WORDS, drop_database, fresh_database
from bench.procstat import sample
from bridge.domain import ChatKey, InboundMessage, MessageStatus, Role, TokenUsage
from bridge.ports import ReplyProgress
from storage import SqlChatStore, create_engine, migrate
from storage.database import sqlite_path

SAVES = 30  # progress saves a reply (section 1's replies: about 30)
UNINDEX = {
    "sqlite": (
        "DROP TRIGGER messages_search_insert",
        "DROP TRIGGER messages_search_delete",
        "DROP TRIGGER messages_search_update",
        "DROP TABLE messages_search",
    ),
    "postgresql": ("DROP INDEX ix_messages_content_trgm",),
}


def words(rng: random.Random, characters: int) -> str:
    out: list[str] = []
    length = 0
    while length < characters:
        word = rng.choice(_WORDS)
        out.append(word)
        length += len(word) + 1
    return " ".join(out)


async def one_run(
    url: str, indexed: bool, replies: int, concurrent: int, seed: int
) -> dict[str, Any]:
    await migrate(url)
    engine = create_engine(url)
    store = SqlChatStore(engine)
    dialect = engine.dialect.name
    if not indexed:
        async with engine.begin() as conn:
            for statement in UNINDEX[dialect]:
                await conn.exec_driver_sql(statement)
    rng = random.Random(seed)
    texts = [(words(rng, 370), words(rng, 1500)) for _ in range(replies)]

    async def write(n: int, question: str, answer: str) -> None:
        key = ChatKey("slack", "T1", f"C{n % 20}", f"{n}.0")
        inbound = InboundMessage(f"Ev{n}", key, f"U{n % 50}", question, f"{n}.1")
        asked = await store.accept_inbound("slack", inbound, {})
        assert asked is not None
        reply = await store.add_message(
            asked.chat_id, Role.ASSISTANT, "", status=MessageStatus.STREAMING, reply_to_id=asked.id
        )
        for save in range(1, SAVES + 1):
            shown = answer[: len(answer) * save // (SAVES + 1)]
            await store.save_reply(reply.id, ReplyProgress(shown, MessageStatus.STREAMING))
        done = ReplyProgress(
            answer, MessageStatus.COMPLETE, ["r"], model="m", usage=TokenUsage(400, 350)
        )
        await store.save_reply(reply.id, done)
        await store.mark_answered(asked.id)

    async def writer(first: int) -> None:
        for n in range(first, replies, concurrent):
            await write(n, *texts[n])

    server = _server_cpu() if dialect == "postgresql" else None
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(writer(first) for first in range(concurrent)))
    if server is not None:
        server = _server_cpu() - server
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await store.close()
    await engine.dispose()
    return {
        "indexed": indexed,
        "ms_per_reply": round(wall * 1000 / replies, 3),
        "cpu_ms_per_reply": round(cpu * 1000 / replies, 3),
        # PostgreSQL's own CPU (its index work is there): every postgres process of this
        # machine, the server under test (the benchmark expects it alone on it).
        "server_cpu_ms_per_reply": None if server is None else round(server * 1000 / replies, 3),
    }


def _server_cpu() -> float:
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.with_name("comm").read_text().strip() != "postgres":
                continue
            total += sample(int(stat.parent.name)).cpu_s
        except (OSError, ValueError):
            continue  # a process that ended meanwhile
    return total


async def fresh(url: str | None, name: str, work: Path) -> tuple[str, Any]:
    """A new empty database for one run (console_data's: an SQLite file in `work`, or a
    PostgreSQL database on `url`'s server), and what measures its size and drops it after."""
    if url is None:
        target = f"sqlite+aiosqlite:///{work / f'{name}.db'}"
    else:
        target = make_url(url).set(database=name).render_as_string(hide_password=False)
    await fresh_database(target)

    async def size_and_drop() -> int:
        path = sqlite_path(target)
        if path is not None:
            return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
        engine = create_engine(target)
        async with engine.connect() as conn:
            size = await conn.exec_driver_sql("SELECT pg_database_size(current_database())")
            found = int(size.scalar_one())
        await engine.dispose()
        await drop_database(target)
        return found

    return target, size_and_drop


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cb-search-writes-") as folder:
        for round_number in range(args.rounds):
            order = (True, False) if round_number % 2 == 0 else (False, True)
            for indexed in order:
                name = f"cb_search_writes_{round_number}_{int(indexed)}"
                url, finish = await fresh(args.url, name, Path(folder))
                run = await one_run(url, indexed, args.replies, args.concurrent, args.seed)
                run["bytes"] = await finish()
                run["round"] = round_number + 1
                runs.append(run)
                print(json.dumps(run), flush=True)
    summary: dict[str, Any] = {}
    for indexed in (True, False):
        mine = [r for r in runs if r["indexed"] is indexed]
        summary["indexed" if indexed else "unindexed"] = {
            key: statistics.median(r[key] for r in mine)
            for key in ("ms_per_reply", "cpu_ms_per_reply", "server_cpu_ms_per_reply", "bytes")
            if all(r[key] is not None for r in mine)
        }
    a, b = summary["indexed"], summary["unindexed"]
    summary["ratio_wall"] = round(a["ms_per_reply"] / b["ms_per_reply"], 3)
    summary["ratio_cpu"] = round(a["cpu_ms_per_reply"] / b["cpu_ms_per_reply"], 3)
    if "server_cpu_ms_per_reply" in a:
        ratio = a["server_cpu_ms_per_reply"] / b["server_cpu_ms_per_reply"]
        summary["ratio_server_cpu"] = round(ratio, 3)
    return {"database": "postgresql" if args.url else "sqlite", "replies": args.replies,
            "concurrent": args.concurrent,
            "saves_per_reply": SAVES, "runs": runs, "median": summary}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a PostgreSQL server (default: SQLite files)")
    parser.add_argument("--replies", type=int, default=300)
    parser.add_argument("--concurrent", type=int, default=50, help="replies written at once")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    print(json.dumps(report["median"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
