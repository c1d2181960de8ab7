"""Serves the REST API over aiohttp: auth, rate limits, body parsing, recording, Discord's replies.

Replies carry `Content-Type: application/json` exactly, because discord.py only decodes JSON
when the header has no charset; every reply carries `Via`, without which discord.py reads a 429
as a Cloudflare ban.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import BodyPartReader, web

from .api import ApiError, ApiReply, ApiRequest, Context, RouteSpec, Upload
from .dispatches import encode
from .faults import ServerFaults
from .rate_limits import RateLimiter
from .records import EmulatorStats, RecordedRequest

API_PREFIX = "/api/v10"
SESSION_STARTS_PER_DAY = 1000
_MAJOR_PARAMETERS = ("channel_id", "guild_id", "webhook_id", "webhook_token")
_UNAUTHORIZED = ApiError(401, 0, "401: Unauthorized")


class BotRoutes:
    """Login and discovery: who the bot is, its application, where the gateway is, DMs, users."""

    def __init__(
        self,
        ctx: Context,
        gateway_url: Callable[[], str],
        shard_count: Callable[[], int],
        sessions_started: Callable[[], int] = lambda: 0,
    ) -> None:
        self.ctx = ctx
        self.gateway_url = gateway_url
        self.shard_count = shard_count
        self.sessions_started = sessions_started

    def specs(self) -> list[RouteSpec]:
        return [
            RouteSpec("GET", "/users/@me", self.me),
            RouteSpec("GET", "/oauth2/applications/@me", self.application),
            RouteSpec("GET", "/applications/@me", self.application),
            RouteSpec("GET", "/gateway", self.gateway, auth=False),
            RouteSpec("GET", "/gateway/bot", self.gateway_bot),
            RouteSpec("POST", "/users/@me/channels", self.open_dm),
            RouteSpec("GET", "/users/{user_id}", self.user),
            RouteSpec("GET", "/guilds/{guild_id}/members/{member_id}", self.member),
        ]

    async def me(self, request: ApiRequest) -> ApiReply:
        return ApiReply(200, self.ctx.wire.current_user())

    async def application(self, request: ApiRequest) -> ApiReply:
        return ApiReply(200, self.ctx.wire.application())

    async def gateway(self, request: ApiRequest) -> ApiReply:
        return ApiReply(200, {"url": self.gateway_url()})

    async def gateway_bot(self, request: ApiRequest) -> ApiReply:
        """The recommended shard count (the emulator's `shard_count`) and the IDENTIFYs left
        today (each session started counts, as on Discord)."""
        total = SESSION_STARTS_PER_DAY
        remaining = max(total - self.sessions_started(), 0)
        limit = {
            "total": total,
            "remaining": remaining,
            "reset_after": 86_400_000,
            "max_concurrency": 1,
        }
        body = {"url": self.gateway_url(), "shards": self.shard_count()}
        return ApiReply(200, {**body, "session_start_limit": limit})

    async def open_dm(self, request: ApiRequest) -> ApiReply:
        recipient = self.ctx.world.users.get(int(request.body().get("recipient_id") or 0))
        if recipient is None or recipient.webhook:
            raise ApiError.unknown("User")
        return ApiReply(200, self.ctx.wire.channel(self.ctx.world.open_dm(recipient.id)))

    async def member(self, request: ApiRequest) -> ApiReply:
        """A guild member with their user and roles (10007 for a user who is not one)."""
        guild = self.ctx.world.guilds.get(request.snowflake("guild_id"))
        if guild is None:
            raise ApiError.unknown("Guild")
        user = self.ctx.world.users.get(request.snowflake("member_id"))
        if user is None or user.webhook:
            raise ApiError.unknown("Member")
        return ApiReply(200, self.ctx.wire.member(guild, user))

    async def user(self, request: ApiRequest) -> ApiReply:
        user = self.ctx.world.users.get(request.snowflake("user_id"))
        if user is None or user.webhook:
            raise ApiError.unknown("User")
        return ApiReply(200, self.ctx.wire.user(user))


class RestServer:
    """Mounts route specs on an aiohttp app and wraps each handler in Discord's HTTP behaviour."""

    def __init__(
        self,
        *,
        token: str,
        limiter: RateLimiter,
        faults: ServerFaults,
        stats: EmulatorStats,
        clock: Callable[[], float],
    ) -> None:
        self.token = token
        self.limiter = limiter
        self.faults = faults
        self.stats = stats
        self.clock = clock
        self.requests: list[RecordedRequest] = []

    def install(self, app: web.Application, specs: list[RouteSpec]) -> None:
        for spec in specs:
            app.router.add_route(spec.method, API_PREFIX + spec.path, self._adapt(spec))
        app.middlewares.append(self._unknown_route)

    def _adapt(self, spec: RouteSpec) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        route = f"{spec.method} {spec.path}"

        async def handle(request: web.Request) -> web.StreamResponse:
            arrived = self.clock()
            params = dict(request.match_info)
            major = "+".join(params[k] for k in _MAJOR_PARAMETERS if k in params)
            self.stats.requests[route] += 1
            headers: dict[str, str] = {}
            body: Any = None
            try:
                if spec.auth and request.headers.get("Authorization") != f"Bot {self.token}":
                    raise _UNAUTHORIZED
                verdict = self.limiter.check(route, major, global_exempt=not spec.auth)
                headers = verdict.headers
                if not verdict.admitted:
                    self._count_429(route, verdict.violation)
                    reply = ApiReply(429, verdict.body)
                else:
                    body, uploads = await _read_body(request)
                    api_request = ApiRequest(
                        spec.method, route, params, dict(request.query), body, uploads
                    )
                    fault = self.faults.take(route, major)
                    if fault is None or fault.applied:
                        reply = await spec.handler(api_request)
                    if fault is not None:
                        # Whether or not the change was made, the client only learns of an error.
                        self.stats.server_errors += 1
                        reply = fault.reply()
            except ApiError as error:
                reply = ApiReply(error.status, error.body)
            self.requests.append(
                RecordedRequest(
                    spec.method, request.path, route, major or None, body, arrived, reply.status
                )
            )
            return respond(reply, headers)

        return handle

    def _count_429(self, route: str, violation: str | None) -> None:
        self.stats.rate_limited += 1
        self.stats.rate_limited_by_route[route] += 1
        if violation is not None:
            self.stats.violations += 1
            self.stats.violations_by_route[violation] += 1

    @web.middleware
    async def _unknown_route(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as error:
            if not request.path.startswith(API_PREFIX):
                raise
            status = error.status
            text = "404: Not Found" if status == 404 else "405: Method Not Allowed"
            self.requests.append(
                RecordedRequest(
                    request.method, request.path, None, None, None, self.clock(), status
                )
            )
            return respond(ApiReply(status, {"message": text, "code": 0}), {})


def respond(reply: ApiReply, headers: dict[str, str]) -> web.Response:
    headers = {**headers, "Via": "1.1 google"}
    if reply.status == 204:
        return web.Response(status=204, headers=headers)
    headers["Content-Type"] = "application/json"
    # Bytes, not text: aiohttp would append "; charset=utf-8" to a text body's content type.
    return web.Response(status=reply.status, body=encode(reply.body).encode(), headers=headers)


async def _read_body(request: web.Request) -> tuple[Any, tuple[Upload, ...]]:
    if not request.can_read_body:
        return None, ()
    if request.content_type.startswith("multipart/"):
        return await _read_multipart(request)
    raw = await request.read()
    if not raw:
        return None, ()
    try:
        return json.loads(raw), ()
    except ValueError:
        raise ApiError(400, 50109, "The request body contains invalid JSON.") from None


async def _read_multipart(request: web.Request) -> tuple[Any, tuple[Upload, ...]]:
    """discord.py sends files as multipart: a `payload_json` part and one part per file."""
    payload: Any = None
    uploads: list[Upload] = []
    reader = await request.multipart()
    async for part in reader:
        if not isinstance(part, BodyPartReader):
            continue
        data = await part.read()
        if part.name == "payload_json":
            payload = json.loads(data)
        elif part.filename is not None:
            content_type = part.headers.get("Content-Type", "application/octet-stream")
            uploads.append(Upload(part.name or "", part.filename, content_type, len(data)))
    return payload, tuple(uploads)
