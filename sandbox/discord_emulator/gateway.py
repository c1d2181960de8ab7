"""The gateway websocket: HELLO, heartbeats, IDENTIFY/READY, sessions that outlive their socket.

A session keeps a backlog of the frames it was sent, so a RESUME replays what the bot missed
while disconnected, then RESUMED, exactly as discord.py expects from Discord.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .dispatches import (
    GUILD_MEMBERS,
    GUILD_PRESENCES,
    GUILDS,
    KNOWN_INTENTS,
    MESSAGE_CONTENT,
    Dispatch,
    encode,
    guild_create,
)
from .model import Guild
from .records import EmulatorStats
from .wire import Wire
from .world import World

HELLO, HEARTBEAT, IDENTIFY, PRESENCE, VOICE_STATE, RESUME, REQUEST_MEMBERS = 10, 1, 2, 3, 4, 6, 8
_ACK = '{"t":null,"s":null,"op":11,"d":null}'
_INVALID_SESSION = '{"t":null,"s":null,"op":9,"d":false}'


@dataclass(eq=False)
class Link:
    """One websocket connection; it may carry a session, or not yet."""

    ws: web.WebSocketResponse
    session: Session | None = None
    closed_by_server: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, frame: str) -> bool:
        async with self.lock:
            if self.ws.closed:
                return False
            try:
                await self.ws.send_str(frame)
            except (ConnectionError, RuntimeError):
                return False
            return True


@dataclass(eq=False)
class Session:
    id: str
    intents: int
    shard: tuple[int, int] | None
    backlog: deque[tuple[int, str]]
    link: Link | None = None
    seq: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def accepts(self, dispatch: Dispatch) -> bool:
        if dispatch.intent and not self.intents & dispatch.intent:
            return False
        if self.shard is None:
            return True
        shard_id, count = self.shard
        # DMs and other guild-less events go to shard 0, like on Discord.
        guild_shard = 0 if dispatch.guild_id is None else (dispatch.guild_id >> 22) % count
        return guild_shard == shard_id

    def handles_guild(self, guild: Guild) -> bool:
        return self.shard is None or (guild.id >> 22) % self.shard[1] == self.shard[0]

    async def emit(self, event: str, data: str) -> None:
        async with self.lock:
            await self._emit_locked(event, data)

    async def _emit_locked(self, event: str, data: str) -> None:
        self.seq += 1
        frame = f'{{"t":"{event}","s":{self.seq},"op":0,"d":{data}}}'
        self.backlog.append((self.seq, frame))
        link = self.link
        if link is not None and not await link.send(frame) and self.link is link:
            self.link = None  # the frame stays in the backlog for a RESUME


class Gateway:
    """Accepts gateway connections and fans dispatches out to the sessions that want them."""

    def __init__(
        self,
        world: World,
        wire: Wire,
        stats: EmulatorStats,
        *,
        token: str,
        heartbeat_interval: int,
        backlog_size: int = 10_000,
    ) -> None:
        self.world = world
        self.wire = wire
        self.stats = stats
        self.token = token
        self.heartbeat_interval = heartbeat_interval
        self.backlog_size = backlog_size
        self.shard_count = 1  # what GET /gateway/bot recommends
        # Discord's limit: a session that would handle more guilds is closed with 4011.
        self.max_guilds_per_shard = 2500
        self.sessions: dict[str, Session] = {}
        self._links: set[Link] = set()
        self._outage_until = 0.0
        self._closers: set[asyncio.Task[Any]] = set()

    async def dispatch(self, dispatch: Dispatch) -> None:
        for session in list(self.sessions.values()):
            if not session.accepts(dispatch):
                continue
            data = dispatch.data
            if dispatch.redacted is not None and not session.intents & dispatch.redact_unless:
                data = dispatch.redacted
            self.stats.dispatches += 1
            await session.emit(dispatch.event, data)

    async def drop(self, code: int, outage: float) -> int:
        """Closes every socket; sessions stay resumable and buffer what happens meanwhile."""
        loop = asyncio.get_running_loop()
        self._outage_until = max(self._outage_until, loop.time() + outage)
        links = [link for link in self._links if not link.ws.closed]
        for link in links:
            link.closed_by_server = True
            if link.session is not None and link.session.link is link:
                link.session.link = None
        await asyncio.gather(*(link.ws.close(code=code) for link in links), return_exceptions=True)
        return len(links)

    async def close(self) -> None:
        await self.drop(1001, 0.0)
        self.sessions.clear()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False, timeout=2.0, max_msg_size=0)
        await ws.prepare(request)
        link = Link(ws)
        self._links.add(link)
        try:
            delay = self._outage_until - asyncio.get_running_loop().time()
            if delay > 0:
                await asyncio.sleep(delay)  # the gateway is "down": the client waits for HELLO
            hello = {"heartbeat_interval": self.heartbeat_interval}
            await link.send(encode({"t": None, "s": None, "op": HELLO, "d": hello}))
            resume_url = f"ws://{request.host}/gateway"
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    await self._on_frame(link, message.data, resume_url)
                else:
                    await self._close(link, 4002, "Error while decoding payload.")
        finally:
            self._links.discard(link)
            self._detach(link)
        return ws

    def _detach(self, link: Link) -> None:
        session = link.session
        if session is None or session.link is not link:
            return
        session.link = None
        # A client that closes with 1000/1001 ends its session; any other loss keeps it resumable.
        if not link.closed_by_server and link.ws.close_code in (1000, 1001):
            self.sessions.pop(session.id, None)

    async def _close(self, link: Link, code: int, reason: str) -> None:
        link.closed_by_server = True
        await link.ws.close(code=code, message=reason.encode())

    async def _on_frame(self, link: Link, text: str, resume_url: str) -> None:
        try:
            frame = json.loads(text)
            op, data = frame["op"], frame.get("d")
        except (ValueError, KeyError, TypeError):
            await self._close(link, 4002, "Error while decoding payload.")
            return
        if op == HEARTBEAT:
            await link.send(_ACK)
        elif op == IDENTIFY:
            await self._identify(link, data if isinstance(data, dict) else {}, resume_url)
        elif op == RESUME:
            await self._resume(link, data if isinstance(data, dict) else {})
        elif link.session is None:
            await self._close(link, 4003, "Not authenticated.")
        elif op == REQUEST_MEMBERS:
            await self._member_chunk(link.session, data if isinstance(data, dict) else {})
        elif op not in (PRESENCE, VOICE_STATE):
            await self._close(link, 4001, "Unknown opcode.")

    def _token_ok(self, token: object) -> bool:
        return token in (self.token, f"Bot {self.token}")

    async def _identify(self, link: Link, data: dict[str, Any], resume_url: str) -> None:
        if link.session is not None:
            await self._close(link, 4005, "Already authenticated.")
            return
        if not self._token_ok(data.get("token")):
            await self._close(link, 4004, "Authentication failed.")
            return
        intents = data.get("intents")
        if not isinstance(intents, int) or intents < 0 or intents & ~KNOWN_INTENTS:
            await self._close(link, 4013, "Invalid intent(s).")
            return
        if intents & self._privileged_denied():
            await self._close(link, 4014, "Disallowed intent(s).")
            return
        shard = data.get("shard")
        if shard is not None and not (
            isinstance(shard, list)
            and len(shard) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) for n in shard)
            and 0 <= shard[0] < shard[1]
        ):
            await self._close(link, 4010, "Invalid shard.")
            return
        shard_pair = (int(shard[0]), int(shard[1])) if shard else None
        backlog: deque[tuple[int, str]] = deque(maxlen=self.backlog_size)
        session = Session(secrets.token_hex(16), intents, shard_pair, backlog)
        guilds = [g for g in self.world.guilds.values() if session.handles_guild(g)]
        if len(guilds) > self.max_guilds_per_shard:
            await self._close(link, 4011, "Sharding required.")
            return
        session.link, link.session = link, session
        self.sessions[session.id] = session
        self.stats.identifies += 1
        app = self.wire.application()
        ready: dict[str, Any] = {
            "v": 10,
            "user": self.wire.current_user(),
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": resume_url,
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["local"],
            "user_settings": {},
            "application": {"id": app["id"], "flags": app["flags"]},
            "auth": {},
            "_trace": ['["chat-bridge-discord-emulator"]'],
        }
        if shard_pair:
            ready["shard"] = list(shard_pair)
        await session.emit("READY", encode(ready))
        if intents & GUILDS:
            for guild in guilds:
                create = guild_create(self.wire, guild)
                members = intents & GUILD_MEMBERS
                await session.emit(create.event, create.data if members else create.redacted or "")

    def _privileged_denied(self) -> int:
        app = self.world.application
        denied = 0 if app.message_content_intent else MESSAGE_CONTENT
        denied |= 0 if app.members_intent else GUILD_MEMBERS
        denied |= 0 if app.presences_intent else GUILD_PRESENCES
        return denied

    async def _resume(self, link: Link, data: dict[str, Any]) -> None:
        if not self._token_ok(data.get("token")):
            await self._close(link, 4004, "Authentication failed.")
            return
        session = self.sessions.get(str(data.get("session_id")))
        seq = data.get("seq") or 0
        if session is None or (session.backlog and session.backlog[0][0] > seq + 1):
            # Unknown session, or the missed events fell out of the backlog: start over.
            await link.send(_INVALID_SESSION)
            return
        async with session.lock:
            previous = session.link
            if previous is not None and previous is not link:
                previous.closed_by_server = True
                task = asyncio.create_task(previous.ws.close(code=4000))
                self._closers.add(task)
                task.add_done_callback(self._closers.discard)
            session.link, link.session = link, session
            missed = [frame for s, frame in session.backlog if s > seq]
            for frame in missed:
                await link.send(frame)
            self.stats.replayed += len(missed)
            self.stats.resumes += 1
            await session._emit_locked("RESUMED", '{"_trace":["chat-bridge-discord-emulator"]}')

    async def _member_chunk(self, session: Session, data: dict[str, Any]) -> None:
        raw_ids = data.get("guild_id")
        guild_ids = raw_ids if isinstance(raw_ids, list) else [raw_ids]
        query = str(data.get("query") or "").lower()
        wanted = {int(u) for u in data.get("user_ids") or []}
        limit = int(data.get("limit") or 0)
        for raw in guild_ids:
            guild = self.world.guilds.get(int(raw or 0))
            if guild is None:
                continue
            members = [
                u
                for u in self.world.members(guild)
                if (not wanted or u.id in wanted) and u.username.lower().startswith(query)
            ]
            members = members[:limit] if limit else members
            chunk: dict[str, Any] = {
                "guild_id": str(guild.id),
                "chunk_index": 0,
                "chunk_count": 1,
                "not_found": [],
                "members": [self.wire.member(guild, u) for u in members],
            }
            if data.get("nonce"):
                chunk["nonce"] = data["nonce"]
            await session.emit("GUILD_MEMBERS_CHUNK", encode(chunk))
