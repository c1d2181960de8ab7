"""`ServerLink`: one configured MCP server kept connected by a background task, with its tools as
last listed. A server that cannot be reached, or whose session dies, is down (it offers no tools)
and is tried again after a back-off.

How a dead session is noticed: a 2026-era server (this SDK's) is followed with a
`subscriptions/listen` stream for tools/list_changed, which also ends when the connection does;
an older server is asked for its tools when it says they changed, when a call finds the
connection closed, when its process exits, and at least every `poll_interval` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack, suppress

import mcp_types as types
from mcp import Client
from mcp.client.session import IncomingMessage
from mcp.client.subscriptions import ListenNotSupportedError, SubscriptionLost
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from adapters.mcp.connection import describe_failure, fetch_tools, open_client
from bridge.tools.settings import MCPServerSettings

log = logging.getLogger(__name__)

# A session that lasted this long was a recovery: the next outage starts the back-off afresh.
_STABLE_AFTER = 60.0
# A listen stream that ends sooner than this (and the server still answers) is not followed
# again: the server is polled instead, so that a server ending streams at once is not hammered.
_SHORT_LISTEN = 5.0


class ServerLink:
    """Started once, stopped once; meanwhile `client` and `tools` say what the server offers."""

    def __init__(
        self,
        settings: MCPServerSettings,
        retry_delays: Sequence[float],
        *,
        connect_timeout: float = 30.0,
        poll_interval: float = 30.0,
    ) -> None:
        self.settings = settings
        self._delays = tuple(retry_delays) or (30.0,)
        self._connect_timeout = connect_timeout
        self._poll_interval = poll_interval
        self._secrets = settings.secrets()
        self._client: Client | None = None
        self._tools: tuple[types.Tool, ...] = ()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def client(self) -> Client | None:
        """The live session; None while the server is down."""
        return self._client

    @property
    def tools(self) -> tuple[types.Tool, ...]:
        """The server's tools as last listed (all of them; `allowed_tools` is not applied)."""
        return self._tools if self._client is not None else ()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"mcp:{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        # Asked again and again: a cancellation that lands while one of the SDK's task groups
        # is cancelling itself is taken by anyio for its own, and swallowed.
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
        while not task.done():
            log.debug("mcp: server %r is still stopping; cancelling again", self.name)
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
        if not task.cancelled() and task.exception() is not None:
            log.error("mcp: server %r stopped with an error", self.name, exc_info=task.exception())

    def wake(self) -> None:
        """Something suggests the session changed or broke: ask the server for its tools now."""
        self._wake.set()

    # --- the background task ---

    async def _run(self) -> None:
        failures = 0
        outage = False  # a warning was logged for the outage under way
        while not self._stopping:
            up_since: float | None = None
            try:
                async with AsyncExitStack() as stack:
                    async with asyncio.timeout(self._connect_timeout):
                        client = await stack.enter_async_context(
                            open_client(
                                self.settings, on_message=self._on_message, on_exit=self.wake
                            )
                        )
                        tools = await fetch_tools(client)
                    self._tools, self._client = tools, client
                    up_since = time.monotonic()
                    if outage:
                        log.info("mcp: server %r is back: %d tools", self.name, len(tools))
                    else:
                        log.info("mcp: server %r is up: %d tools", self.name, len(tools))
                    outage = False
                    try:
                        await self._follow(client)
                    finally:
                        self._client = None
            except TimeoutError:
                what = "no answer" if up_since is None else "tools/list got no answer"
                reason = f"{what} within {self._connect_timeout:g} s"
            except Exception as exc:
                reason = describe_failure(exc, self._secrets)
            else:
                reason = "the session ended"
            self._client, self._tools = None, ()
            if self._stopping:
                return
            if up_since is not None and time.monotonic() - up_since >= _STABLE_AFTER:
                failures = 0
            delay = self._delays[min(failures, len(self._delays) - 1)]
            failures += 1
            if not outage:
                outage = True
                log.warning(
                    "mcp: server %r is down (%s); retrying in %g s", self.name, reason, delay
                )
            else:
                log.debug(
                    "mcp: server %r still down (%s); next try in %g s", self.name, reason, delay
                )
            await asyncio.sleep(delay)

    async def _follow(self, client: Client) -> None:
        """Keep the tools up to date until the session dies (raises)."""
        tools_capability = client.server_capabilities.tools
        listens = (
            client.protocol_version in MODERN_PROTOCOL_VERSIONS
            and tools_capability is not None
            and bool(tools_capability.list_changed)
        )
        while True:
            if listens:
                began = time.monotonic()
                try:
                    async with client.listen(tools_list_changed=True) as subscription:
                        async for _event in subscription:
                            await self._refresh(client)
                except ListenNotSupportedError:
                    listens = False
                except MCPError as exc:
                    # Refused (rather than cut by a closed connection): poll instead.
                    listens = exc.error.code != types.CONNECTION_CLOSED
                except SubscriptionLost:
                    pass
                if time.monotonic() - began < _SHORT_LISTEN:
                    listens = False
            else:
                with suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_interval):
                        await self._wake.wait()
            self._wake.clear()
            # The stream ended or it is time to look: a closed session raises here.
            await self._refresh(client)

    async def _refresh(self, client: Client) -> None:
        async with asyncio.timeout(self._connect_timeout):
            tools = await fetch_tools(client)
        if [t.name for t in tools] != [t.name for t in self._tools]:
            log.info("mcp: server %r now has %d tools", self.name, len(tools))
        self._tools = tools

    def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self.wake()
        elif isinstance(message, Exception):
            log.debug("mcp: server %r: transport error: %s", self.name, message)
