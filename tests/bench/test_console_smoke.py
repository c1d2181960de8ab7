"""The console benchmark on a tiny database (2,000 messages, SQLite), so that its generator and
its page timing cannot rot. Figures are checked for presence and sense, never for speed: the
machine is shared."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import func, select

from bench.console_data import Shape, fill
from storage import SqlChatStore, create_engine
from storage.models import MessageRow, TokenUsageMonthRow, TokenUsageRow

ROOT = Path(__file__).resolve().parents[2]


async def test_the_generator_fills_a_database_the_store_reads(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/console.db"
    shape = Shape(messages=2000, end=datetime(2027, 3, 1, tzinfo=UTC))
    written = await fill(url, shape, quiet=True)

    assert 1800 <= written.messages <= 2200 and written.chats == shape.chats
    engine = create_engine(url)
    try:
        store = SqlChatStore(engine)
        async with engine.connect() as conn:
            stored = (await conn.execute(select(func.count()).select_from(MessageRow))).scalar()
            replies = (
                await conn.execute(
                    select(func.sum(TokenUsageRow.replies)).where(TokenUsageRow.scope == "user")
                )
            ).scalar()
        assert stored == written.messages
        assert replies is not None and 0 < replies <= written.messages // 2
        # The monthly counters the usage page sums are those of the days.
        async with engine.connect() as conn:
            monthly = await conn.execute(
                select(
                    TokenUsageMonthRow.month,
                    TokenUsageMonthRow.scope,
                    func.sum(TokenUsageMonthRow.tokens),
                    func.sum(TokenUsageMonthRow.replies),
                ).group_by(TokenUsageMonthRow.month, TokenUsageMonthRow.scope)
            )
            months = {(month, scope): (int(t), int(r)) for month, scope, t, r in monthly}
            daily = await conn.execute(
                select(TokenUsageRow.day, TokenUsageRow.scope, TokenUsageRow.tokens,
                       TokenUsageRow.replies).where(TokenUsageRow.scope != "platform")
            )  # fmt: skip
            summed: dict[tuple[date, str], tuple[int, int]] = {}
            for day, scope, tokens, count in daily:
                t, r = summed.get((day.replace(day=1), scope), (0, 0))
                summed[(day.replace(day=1), scope)] = (t + tokens, r + count)
        assert months == summed and len(months) >= 4  # 90 days: parts of 4 or 5 months
        from bridge.ports import ChatFilter

        page = await store.browse(ChatFilter(), limit=20)
        assert len(page.chats) == 20 and page.next is not None
        newest = page.chats[0]
        assert newest.last_activity <= shape.end and newest.messages > 0
        thread = await store.conversation(newest.id)
        assert thread is not None and thread.messages[0].role.value == "user"
    finally:
        await engine.dispose()


def test_the_page_benchmark_times_every_page(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/console.db"
    fill_command = [sys.executable, "-m", "bench.console_data", "--url", url, "--messages", "2000"]
    done = subprocess.run(fill_command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    saved = tmp_path / "pages.json"
    command = [sys.executable, "-m", "bench.console", "pages", "--url", url, "--requests", "2"]
    done = subprocess.run(
        [*command, "--json", str(saved)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]

    report = json.loads(saved.read_text())
    assert "| list: first page |" in done.stdout
    assert report["data"]["messages"] > 1800 and report["database"] == "sqlite"
    assert len(report["pages"]) == 20
    for name, page in report["pages"].items():
        assert page["requests"] == 2, name
        assert 0 < page["server_p50_ms"] <= page["server_max_ms"], name
        assert page["bytes"] > 0, name
