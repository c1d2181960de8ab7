"""Shared fixtures: a fresh database per test on SQLite and, when reachable, on PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# Not CHAT_BRIDGE_*: that prefix is reserved for the bridge's own settings.
POSTGRES_ENV = "BRIDGE_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def postgres_admin_url() -> str | None:
    url = os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES_URL)
    return url or None


async def _postgres_unavailable(url: str) -> str | None:
    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except Exception as exc:  # any failure means "not here", reported as the skip reason
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database: a file in tmp_path, or a throwaway database on the PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}"
        return
    async for url in _fresh_postgres_database():
        yield url


async def _fresh_postgres_database() -> AsyncIterator[str]:
    import asyncpg

    admin = postgres_admin_url()
    if admin is None:
        pytest.skip(f"PostgreSQL tests disabled: {POSTGRES_ENV} is empty")
    reason = await _postgres_unavailable(admin)
    if reason is not None:
        pytest.skip(f"PostgreSQL not reachable at {admin} ({reason}); set {POSTGRES_ENV}")
    name = f"chat_bridge_test_{uuid.uuid4().hex[:12]}"
    dsn = admin.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = admin.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A throwaway database on the PostgreSQL server (skipped, with the reason, without one)."""
    async for url in _fresh_postgres_database():
        yield url
