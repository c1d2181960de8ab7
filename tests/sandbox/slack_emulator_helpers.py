"""Test doubles that speak Slack's wire formats from the app's side, for the emulator's own tests.

`RawSocketApp` is a minimal Socket Mode client (to see exactly what the emulator sends, and to
withhold acks); `EventsEndpoint` is an Events API receiver whose answers a test scripts.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from sandbox.local_server import LocalServer
from sandbox.slack_emulator import SlackEmulator


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RawSocketApp:
    def __init__(self, emu: SlackEmulator, *, ack: bool = True) -> None:
        self.emu = emu
        self.ack = ack
        self.received: list[dict[str, Any]] = []
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def envelopes(self) -> list[dict[str, Any]]:
        return [m for m in self.received if m.get("type") == "events_api"]

    @property
    def hello(self) -> dict[str, Any]:
        return self.received[0]

    async def connect(self) -> None:
        self._session = aiohttp.ClientSession()
        headers = {"Authorization": f"Bearer {self.emu.identity.app_token}"}
        async with self._session.post(
            self.emu.api_base_url + "apps.connections.open", headers=headers
        ) as response:
            url = (await response.json())["url"]
        self._ws = await self._session.ws_connect(url)
        self._reader = asyncio.create_task(self._read(self._ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for frame in ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                continue
            message = json.loads(frame.data)
            self.received.append(message)
            if self.ack and "envelope_id" in message:
                await ws.send_json({"envelope_id": message["envelope_id"]})

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await self._reader
        if self._session is not None:
            await self._session.close()


@dataclass
class ReceivedRequest:
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class EventsEndpoint:
    """Answers each POST with the next scripted (status, delay, headers), then 200s."""

    script: list[tuple[int, float, dict[str, str]]] = field(default_factory=list)
    received: list[ReceivedRequest] = field(default_factory=list)
    server: LocalServer | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/slack/events", self._handle)
        self.server = LocalServer(app)
        await self.server.start()
        return f"{self.server.url}/slack/events"

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append(ReceivedRequest(dict(request.headers), await request.json()))
        status, delay, headers = self.script.pop(0) if self.script else (200, 0.0, {})
        if delay:
            await asyncio.sleep(delay)
        return web.Response(status=status, headers=headers)
