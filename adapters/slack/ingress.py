"""How events reach the Bolt app: Socket Mode (an outbound WebSocket, the default) or HTTP (Bolt's
aiohttp app on http_host:http_port/slack/events, every request's signature checked by Bolt), and
who they reach: the bot's identity, which Bolt attaches to every request (`Identity`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.api import call

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
CONNECT_TIMEOUT = 30.0


class Identity:
    """Who the bot is in its workspace (auth.test), asked of Slack once and kept: the adapter's
    start asks, and Bolt's `authorize` for every event and command reads the answer.

    Not Bolt's own authorization for a token it is given: that one keeps auth.test's answer only
    once a call has returned, so every event arriving while the first call is out makes its own.
    Twenty people mentioning the bot at once are forty events (each mention is also a `message`),
    and were forty calls. Here everyone who asks before the answer is in waits for the same call.
    One bot token belongs to one workspace (an org-wide install's token too: one identity).
    """

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client
        self._answer: asyncio.Future[AuthorizeResult] | None = None

    async def result(self) -> AuthorizeResult:
        """The identity; the first call (and the first after a failed one) asks Slack.

        Raises what `call` raises for auth.test (SlackCallFailed, RateLimited)."""
        answer = self._answer
        if answer is None or (answer.done() and (answer.cancelled() or answer.exception())):
            answer = self._answer = asyncio.ensure_future(self._ask())
        # Shielded: a caller that is cancelled (an event dropped) leaves the call to the others.
        return await asyncio.shield(answer)

    async def _ask(self) -> AuthorizeResult:
        auth = await call("auth.test", "identity", self._client.auth_test())
        return AuthorizeResult.from_auth_test_response(
            auth_test_response=auth,
            bot_token=self._client.token,
            bot_scopes=auth.headers.get("x-oauth-scopes"),
        )

    def authorize(self) -> Callable[[], Awaitable[AuthorizeResult]]:
        """`AsyncApp(authorize=...)`: Bolt passes a function the arguments it names (a bound
        method would be asked for `self`), so this one is a closure that names none."""

        async def authorize() -> AuthorizeResult:
            return await self.result()

        return authorize


class Ingress(Protocol):
    @property
    def connected(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop_intake(self) -> None:
        """Take no more events; what was taken is still answered (the bridge drains)."""
        ...

    async def stop(self) -> None: ...


class SocketModeIngress:
    """One Socket Mode connection; slack_sdk reconnects on its own after Slack's `disconnect`."""

    def __init__(self, app: AsyncApp, app_token: str, client: AsyncWebClient) -> None:
        self._app = app
        self._app_token = app_token
        self._client = client
        self._handler: AsyncSocketModeHandler | None = None

    @property
    def connected(self) -> bool:
        """The WebSocket is open (slack_sdk's own check, less its async ping-pong probe)."""
        if self._handler is None:
            return False
        socket = self._handler.client
        session = socket.current_session
        return not socket.closed and not socket.stale and session is not None and not session.closed

    async def start(self) -> None:
        # The handler's client opens an aiohttp session and starts a task: it needs the loop.
        handler = AsyncSocketModeHandler(self._app, self._app_token, web_client=self._client)
        self._handler = handler
        socket = handler.client
        # slack_bolt leaves connect_async and close_async unannotated: name their types.
        connect: Callable[[], Awaitable[None]] = handler.connect_async
        try:
            # slack_sdk retries a failing connect forever; asking for the URL first makes a wrong
            # app token fail the start with Slack's error instead.
            socket.wss_uri = await call(
                "apps.connections.open", "socket mode", socket.issue_new_wss_url()
            )
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await connect()
        except BaseException:
            await self.stop()
            raise
        log.info("slack: connected in Socket Mode")

    async def stop_intake(self) -> None:
        # Unacknowledged events are delivered to another connection, or again after a restart.
        await self.stop()

    async def stop(self) -> None:
        if self._handler is None:
            return
        socket = self._handler.client
        close: Callable[[], Awaitable[None]] = self._handler.close_async
        await close()
        # close() cancels its tasks without waiting; wait so none outlives the adapter.
        tasks = [socket.message_processor, socket.current_session_monitor, socket.message_receiver]
        pending = [t for t in tasks if isinstance(t, asyncio.Future) and not t.done()]
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*pending, return_exceptions=True)
        self._handler = None


class HttpIngress:
    """The Events API endpoint. Bolt answers a bad, missing or stale signature with 401."""

    def __init__(self, app: AsyncApp, host: str, port: int) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._draining = False

    @property
    def connected(self) -> bool:
        """Listening for Slack's requests (over HTTP, Slack connects to us)."""
        return self._runner is not None and not self._draining

    async def start(self) -> None:
        self._draining = False
        application = self._app.web_app(path=EVENTS_PATH, port=self._port)
        application.middlewares.append(self._refuse_while_draining)
        runner = web.AppRunner(application, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("slack: receiving events at http://%s:%s%s", self._host, self._port, EVENTS_PATH)

    async def stop_intake(self) -> None:
        self._draining = True

    @web.middleware
    async def _refuse_while_draining(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self._draining:
            # Not acknowledged (Bolt would acknowledge before its listener runs): Slack retries
            # the event, and a running instance answers it.
            return web.Response(status=503, text="draining", headers={"Retry-After": "1"})
        return await handler(request)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
