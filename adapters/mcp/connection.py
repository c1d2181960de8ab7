"""One connection to one configured MCP server through the SDK's `Client`: a child process over
stdio, or streamable HTTP; and the words a failure to connect is logged with.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Literal

import httpx2
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.client.session import IncomingMessage
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from adapters.mcp.stderr import ServerStderr
from bridge import __version__
from bridge.tools.settings import MCPServerSettings

# What a server process inherits of the bridge's environment; its `env` is added on top. (The SDK
# adds its own short list too: HOME, LOGNAME, PATH, SHELL, TERM, USER.) Nothing else leaks in:
# the bridge's tokens live in its environment.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")

# The SDK's own defaults: a POST waits 30 s to connect; a stream may stay silent for 5 min.
_HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)

# A listing that never ends (a buggy paginator) is cut here.
_MAX_PAGES = 100

CLIENT_INFO = types.Implementation(name="chat-bridge", version=__version__)


def transport_of(server: MCPServerSettings) -> Literal["stdio", "http"]:
    return "stdio" if server.command is not None else "http"


def server_environment(server: MCPServerSettings) -> dict[str, str]:
    env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    env.update({name: value.get_secret_value() for name, value in server.env.items()})
    return env


@asynccontextmanager
async def open_client(
    server: MCPServerSettings,
    *,
    on_message: Callable[[IncomingMessage], None] | None = None,
    on_exit: Callable[[], None] | None = None,
) -> AsyncIterator[Client]:
    """A connected and initialised `Client`; leaving it ends the session (and the process).

    No response cache (`cache=None`): the tool listings are kept, and refreshed, by the caller.

    `on_message`: each notification of the server (and transport fault) the SDK surfaces.
    `on_exit`: a stdio server's process closed its stderr (it exited).
    """

    async def handle(message: IncomingMessage) -> None:
        if on_message is not None:
            on_message(message)

    async with AsyncExitStack() as stack:
        if server.command is not None:
            stderr = await stack.enter_async_context(
                ServerStderr(server.name, server.secrets(), on_eof=on_exit)
            )
            parameters = StdioServerParameters(
                command=server.command, args=list(server.args), env=server_environment(server)
            )
            # The SDK spawns the process on entering; stderr goes to the pipe above.
            client = Client(
                stdio_client(parameters, errlog=stderr.write_end),
                cache=None,
                message_handler=handle,
                client_info=CLIENT_INFO,
            )
            try:
                await stack.enter_async_context(client)
            finally:
                stderr.spawned()
        else:
            assert server.url is not None  # the settings allow one of command and url
            headers = {name: value.get_secret_value() for name, value in server.headers.items()}
            http = await stack.enter_async_context(
                httpx2.AsyncClient(headers=headers, timeout=_HTTP_TIMEOUT)
            )
            client = Client(
                streamable_http_client(server.url, http_client=http),
                cache=None,
                message_handler=handle,
                client_info=CLIENT_INFO,
            )
            await stack.enter_async_context(client)
        yield client


def describe_failure(exc: BaseException, secrets: Sequence[str] = ()) -> str:
    """A short reason for the log and for `chat-bridge tools`: the innermost errors of a task
    group's exception, by type and message, with any configured secret cut out."""
    parts: list[str] = []
    for leaf in _leaves(exc):
        if isinstance(leaf, MCPError):
            text = f"MCP error {leaf.error.code}: {leaf.error.message}"
        elif isinstance(leaf, TimeoutError):
            text = "timed out"
        else:
            message = str(leaf).strip()
            text = f"{type(leaf).__name__}: {message}" if message else type(leaf).__name__
        if text not in parts:
            parts.append(text)
    reason = "; ".join(parts[:3]) or type(exc).__name__
    for secret in secrets:
        if secret:
            reason = reason.replace(secret, "***")
    return reason.replace("\n", " ")[:300]


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


async def fetch_tools(client: Client) -> tuple[types.Tool, ...]:
    """Every tool the server lists, page after page, in its order."""
    tools: list[types.Tool] = []
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return tuple(tools)
