"""Socket Mode: one-use connection tickets, the WebSocket endpoint, envelopes out and acks back.

Several connections may be open at once (as with Slack); each envelope goes to exactly one of them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from sandbox.slack_emulator.emulator import SlackEmulator

LINK_PATH = "/link/"
_log = logging.getLogger(__name__)


@dataclass(slots=True)
class SocketConnection:
    id: int
    ws: web.WebSocketResponse
    opened_at: float
    draining: bool = False  # told to reconnect: no new envelopes go here
    envelopes_sent: int = 0


@dataclass(frozen=True, slots=True)
class SocketAck:
    envelope_id: str
    at: float
    connection_id: int
    payload: dict[str, Any] | None = None


@dataclass(slots=True)
class SocketHub:
    """Owns the live WebSocket connections of the emulated app."""

    app_id: str
    clock: Callable[[], float]
    on_ack: Callable[[SocketAck], None]
    base_url: str = ""  # ws://host:port, set once the server listens
    connections: list[SocketConnection] = field(default_factory=list)
    acks: dict[str, SocketAck] = field(default_factory=dict)
    connects: int = 0
    _tickets: set[str] = field(default_factory=set)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _turn: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    on_change: Callable[[], None] = lambda: None

    def issue_url(self) -> str:
        ticket = str(uuid.uuid4())
        self._tickets.add(ticket)
        return f"{self.base_url}{LINK_PATH}?ticket={ticket}&app_id={self.app_id}"

    def open_connections(self) -> list[SocketConnection]:
        return [c for c in self.connections if not c.draining and not c.ws.closed]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid ticket")
        self._tickets.discard(ticket)
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        conn = SocketConnection(next(self._ids), ws, self.clock())
        self.connections.append(conn)
        self.connects += 1
        self._signal()
        try:
            await ws.send_str(json.dumps(self._hello()))
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    self._receive(conn, frame.data)
        finally:
            self.connections.remove(conn)
            self._signal()
        return ws

    def _hello(self) -> dict[str, Any]:
        return {
            "type": "hello",
            "num_connections": len(self.connections),
            "debug_info": {
                "host": "applink-emulator",
                "build_number": 1,
                "approximate_connection_time": 18060,
            },
            "connection_info": {"app_id": self.app_id},
        }

    def _receive(self, conn: SocketConnection, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            _log.warning("socket mode client sent non-JSON text: %r", data[:200])
            return
        envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
        if not isinstance(envelope_id, str):
            return
        ack = SocketAck(envelope_id, self.clock(), conn.id, message.get("payload"))
        self.acks[envelope_id] = ack
        self.on_ack(ack)
        self.on_change()

    async def send(self, envelope: dict[str, Any]) -> SocketConnection | None:
        """Send to one open connection (round robin); None when no connection takes it."""
        text = json.dumps(envelope)
        candidates = self.open_connections()
        for offset in range(len(candidates)):
            conn = candidates[(self._turn + offset) % len(candidates)]
            try:
                await conn.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                continue
            self._turn += offset + 1
            conn.envelopes_sent += 1
            return conn
        return None

    async def disconnect(self, reason: str = "refresh_requested") -> int:
        """Ask every open connection to reconnect, as Slack does before recycling a host."""
        message = json.dumps(
            {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-emulator"}}
        )
        targets = self.open_connections()
        for conn in targets:
            conn.draining = True
            try:
                await conn.ws.send_str(message)
            except (ConnectionError, RuntimeError):
                pass
        return len(targets)

    async def wait_for_connections(self, count: int) -> None:
        while len(self.open_connections()) < count:
            self._changed.clear()
            await self._changed.wait()

    async def close_all(self, *_: object) -> None:
        for conn in list(self.connections):
            await conn.ws.close(code=1001, message=b"server shutting down")

    def _signal(self) -> None:
        self._changed.set()
        self.on_change()


class AwaitingAck(Protocol):
    """A delivery that waits for the app's ack: an interaction or a slash command."""

    envelope_id: str | None
    payload: dict[str, Any]
    answered: asyncio.Event
    failure: str | None


async def deliver_awaiting_ack(
    emu: SlackEmulator,
    waiting: dict[str, Any],
    run: AwaitingAck,
    kind: str,
    *,
    accepts_response_payload: bool,
) -> None:
    """Send `run.payload` as one Socket Mode envelope of `kind` ("interactive",
    "slash_commands") and wait for the ack (its `on_ack` sets `answered`). Slack retries
    neither: no connection is "dispatch_failed", no ack within 3 s "operation_timeout"."""
    run.envelope_id = str(uuid.uuid4())
    envelope = {
        "envelope_id": run.envelope_id,
        "payload": run.payload,
        "type": kind,
        "accepts_response_payload": accepts_response_payload,
    }
    waiting[run.envelope_id] = run
    if await emu.sockets.send(envelope) is None:
        del waiting[run.envelope_id]
        run.failure = "dispatch_failed"
        return
    try:
        await asyncio.wait_for(run.answered.wait(), emu.ack_timeout)
    except TimeoutError:
        run.failure = "operation_timeout"
