"""The console against a real SQLite store, driven through aiohttp's test client (real HTTP on
127.0.0.1), with its clock and its sleep injected."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from adapters.console import ConsoleServer, hash_password
from bridge.console_settings import ConsoleSettings
from storage import SqlChatStore, create_engine, migrate
from tests.storage.conversations_seed import Seeded, seed

PASSWORD = "correct horse battery staple"
PASSWORD_HASH = hash_password(PASSWORD)
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Clock:
    now: float = 1_800_000_000.0
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


@dataclass
class Console:
    client: TestClient  # type: ignore[type-arg]
    clock: Clock
    seeded: Seeded

    async def login(self, password: str = PASSWORD) -> int:
        page = await self.client.get("/login")
        token = csrf_of(await page.text())
        response = await self.client.post(
            "/login", data={"password": password, "csrf": token}, allow_redirects=False
        )
        return response.status

    async def page(self, path: str) -> tuple[int, str]:
        response = await self.client.get(path, allow_redirects=False)
        return response.status, await response.text()


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match is not None, html
    return match.group(1)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlChatStore]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}"
    await migrate(url)
    engine = create_engine(url)
    store = SqlChatStore(engine)
    yield store
    await store.close()
    await engine.dispose()


@pytest.fixture
async def console(store: SqlChatStore) -> AsyncIterator[Console]:
    seeded = await seed(store)
    clock = Clock()
    settings = ConsoleSettings(
        enabled=True, password_hash=SecretStr(PASSWORD_HASH), session_hours=12
    )
    server = ConsoleServer(settings, browser=store, clock=clock, sleep=clock.sleep, page_size=3)
    client = TestClient(TestServer(server.app()))
    await client.start_server()
    try:
        yield Console(client, clock, seeded)
    finally:
        await client.close()


class Page:
    """What live.js keeps of each reply's text: a reset's or a reply's whole `text`, or an
    `append` placed at its absolute position `at` (the page's text must end there)."""

    def __init__(self) -> None:
        self.texts: dict[int, tuple[int, str]] = {}  # id -> (cut, text)

    def read(self, name: str, data: Any) -> Any:
        """The event's data with each reply's whole text, as the page then shows it."""
        if name == "reset":
            self.texts = {r["id"]: (r["cut"], r["text"]) for r in data["replies"]}
            return data
        if name != "reply":
            return data
        sent = dict(data["reply"])
        if "append" in sent:
            assert "text" not in sent
            cut, held = self.texts[sent["id"]]
            assert cut + len(held) == sent.pop("at"), "an append that does not follow"
            sent["text"] = (held + sent.pop("append"))[sent["cut"] - cut :]
        self.texts[sent["id"]] = (sent["cut"], sent["text"])
        return {**data, "reply": sent}
