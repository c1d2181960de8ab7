"""The Web API endpoint `/api/{method}`: argument merging, token checks, rate limits, call records.

Like Slack, API errors are HTTP 200 with `ok: false`; only rate limiting changes the status (429).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sandbox.slack_emulator.arguments import ApiError, Args, Handler, merge_arguments
from sandbox.slack_emulator.methods import HANDLERS

if TYPE_CHECKING:
    from sandbox.slack_emulator.emulator import SlackEmulator

APP_TOKEN_METHODS = frozenset({"apps.connections.open"})


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One Web API request as the emulator saw and answered it."""

    method: str
    args: dict[str, Any]
    response: dict[str, Any]
    at: float  # the emulator's monotonic clock
    http_status: int  # 0: carried out, but the connection was dropped before the answer

    @property
    def ok(self) -> bool:
        return bool(self.response.get("ok"))

    @property
    def error(self) -> str | None:
        error = self.response.get("error")
        return str(error) if error is not None else None


class WebApi:
    def __init__(self, emulator: SlackEmulator) -> None:
        self._emu = emulator
        self.handlers: dict[str, Handler] = dict(HANDLERS)

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        emu = self._emu
        try:
            raw = merge_arguments(request.query, *await _read_body(request))
        except ApiError as error:
            return self._answer(method, {}, error.to_response(), 200)
        token = _bearer(request.headers.get("Authorization", "")) or str(raw.pop("token", ""))
        raw.pop("token", None)
        handler = self.handlers.get(method)
        try:
            if handler is None:
                raise ApiError("unknown_method", req_method=method)
            self._authorize(method, token)
        except ApiError as error:
            return self._answer(method, raw, error.to_response(), 200)
        channel = str(raw.get("channel") or raw.get("channel_id") or "")
        retry_after = emu.limiter.check(method, channel)
        if retry_after is not None:
            emu.rate_limited[method] += 1
            body = {"ok": False, "error": "ratelimited"}
            return self._answer(method, raw, body, 429, {"Retry-After": str(retry_after)})
        try:
            result = {"ok": True, **handler(emu, Args(raw))}
        except ApiError as error:
            result = error.to_response()
        if emu.dropped_answers[method] > 0:
            # The network fails after Slack acted: the client cannot tell whether it did.
            emu.dropped_answers[method] -= 1
            self._record(method, raw, result, 0)
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=200)  # never sent: the connection is gone
        return self._answer(method, raw, result, 200)

    def _authorize(self, method: str, token: str) -> None:
        identity = self._emu.identity
        if not token:
            raise ApiError("not_authed")
        if token == identity.app_token:
            if method not in APP_TOKEN_METHODS:
                raise ApiError("not_allowed_token_type")
        elif token == identity.bot_token:
            if method in APP_TOKEN_METHODS:
                raise ApiError("not_allowed_token_type")
        else:
            raise ApiError("invalid_auth")

    def _answer(
        self,
        method: str,
        args: dict[str, Any],
        body: dict[str, Any],
        status: int,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        self._record(method, args, body, status)
        # Slack names the token's scopes on every answer (Bolt reads them from auth.test's).
        sent = {"x-oauth-scopes": ",".join(sorted(self._emu.scopes)), **(headers or {})}
        return web.Response(
            text=json.dumps(body),
            status=status,
            headers=sent,
            content_type="application/json",
            charset="utf-8",
        )

    def _record(self, method: str, args: dict[str, Any], body: dict[str, Any], status: int) -> None:
        emu = self._emu
        emu.calls.append(ApiCall(method, args, body, emu.clock(), status))
        emu.call_counts[method] += 1
        emu.poke()


async def _read_body(request: web.Request) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(form fields, JSON object) of the request body; either may be None."""
    if not request.body_exists:
        return None, None
    if request.content_type == "application/json":
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            raise ApiError("invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError("invalid_json")
        return None, body
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        return {key: value for key, value in form.items() if isinstance(value, str)}, None
    return None, None


def _bearer(header: str) -> str:
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""
