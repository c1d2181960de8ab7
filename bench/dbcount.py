"""Counts the row writes a bot makes to its SQLite file, with triggers the harness installs.

Installed after the schema exists and before the first user message: every INSERT and UPDATE of
a row in any table bumps a counter in the same transaction. This counts what reached the file,
whatever the bot batches or coalesces, and needs nothing from the bot. The cost to the bot is
one extra single-row UPDATE per write, inside its own transaction.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

COUNTER_TABLE = "bench_row_writes"
_SKIP = ("alembic_version", COUNTER_TABLE)


def install_counters(path: Path) -> list[str]:
    """Add the counter table and triggers; returns the tables now counted."""
    with closing(sqlite3.connect(path)) as conn, conn:
        found = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
        # A virtual table (the bridge's FTS5 text search index) takes no trigger; it and its
        # shadow tables are an index of rows counted in their own table, not rows of their own.
        virtual = [name for name, sql in found if (sql or "").startswith("CREATE VIRTUAL")]
        tables = [
            name
            for name, _ in found
            if name not in _SKIP and not any(name.startswith(v) for v in virtual)
        ]
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {COUNTER_TABLE} "
            "(tbl TEXT NOT NULL, op TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (tbl, op))"
        )
        for table in tables:
            for op in ("insert", "update"):
                conn.execute(f"INSERT OR IGNORE INTO {COUNTER_TABLE} VALUES (?, ?, 0)", (table, op))
                conn.execute(
                    f"CREATE TRIGGER IF NOT EXISTS bench_count_{table}_{op} AFTER {op.upper()} "
                    f"ON {table} BEGIN UPDATE {COUNTER_TABLE} SET n = n + 1 "
                    f"WHERE tbl = '{table}' AND op = '{op}'; END"
                )
    return tables


def read_counters(path: Path) -> dict[str, int]:
    """{"table.op": rows written} since the counters were installed."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        rows = conn.execute(f"SELECT tbl, op, n FROM {COUNTER_TABLE} ORDER BY tbl, op")
        return {f"{table}.{op}": n for table, op, n in rows}


def scalar(path: Path, sql: str) -> int:
    """One number from the bot's database (read-only; WAL readers never block its writer)."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row and row[0] is not None else 0
