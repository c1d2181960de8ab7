"""`MCPToolBox`: the `ToolBox` port over the configured MCP servers (service "mcp").

Each server has its own `ServerLink`; a server that is down offers no tools and never delays the
others, nor the bridge's start. Calls run concurrently over each server's one session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from adapters.mcp.connection import describe_failure
from adapters.mcp.link import ServerLink
from adapters.mcp.results import result_text
from bridge.ports import ToolFailed, ToolSpec
from bridge.tools.settings import MCPServerSettings, MCPSettings

DEFAULT_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 60.0)


def is_allowed(server: MCPServerSettings, tool: str) -> bool:
    return not server.allowed_tools or tool in server.allowed_tools


def is_selected(server: str, tool: str, selection: Sequence[str]) -> bool:
    return any(name in selection for name in ("*", f"{server}.*", f"{server}.{tool}"))


class MCPToolBox:
    """Service "mcp". `start()` returns at once: servers connect (and reconnect) in the
    background, with `retry_delays` between attempts (the last one repeats)."""

    def __init__(
        self, settings: MCPSettings, *, retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS
    ) -> None:
        self.name = "mcp"
        # Config order: `available` lists servers in it.
        self._links = {server.name: ServerLink(server, retry_delays) for server in settings.servers}

    async def start(self) -> None:
        for link in self._links.values():
            link.start()

    async def stop(self) -> None:
        await asyncio.gather(*(link.stop() for link in self._links.values()))

    def available(self, selection: Sequence[str]) -> tuple[ToolSpec, ...]:
        if not selection:
            return ()
        specs: list[ToolSpec] = []
        for link in self._links.values():
            for tool in link.tools:
                if is_allowed(link.settings, tool.name) and is_selected(
                    link.name, tool.name, selection
                ):
                    specs.append(
                        ToolSpec(
                            name=f"{link.name}.{tool.name}",
                            description=tool.description or tool.title or "",
                            parameters=tool.input_schema or {"type": "object", "properties": {}},
                        )
                    )
        return tuple(specs)

    async def call(self, name: str, arguments: Mapping[str, Any]) -> str:
        server, _, tool = name.partition(".")
        link = self._links.get(server)
        if link is None or not tool:
            raise ToolFailed(f"unknown tool '{name}'")
        if not is_allowed(link.settings, tool):
            raise ToolFailed(f"the tool '{name}' is not allowed")
        client = link.client
        if client is None:
            raise ToolFailed(f"the tool server '{server}' is not available")
        if all(listed.name != tool for listed in link.tools):
            raise ToolFailed(f"unknown tool '{name}': the server '{server}' does not offer it")
        timeout = link.settings.timeout
        try:
            # On timeout (or when the caller is cancelled) the SDK tells the server to cancel.
            async with asyncio.timeout(timeout):
                result = await client.call_tool(tool, dict(arguments))
        except TimeoutError:
            raise ToolFailed(
                f"the tool '{name}' timed out after {timeout:g} s", timed_out=True
            ) from None
        except MCPError as exc:
            if exc.error.code == types.REQUEST_TIMEOUT:
                raise ToolFailed(
                    f"the tool '{name}' timed out after {timeout:g} s", timed_out=True
                ) from None
            if exc.error.code == types.CONNECTION_CLOSED:
                link.wake()
                raise ToolFailed(f"the tool server '{server}' closed the connection") from None
            raise ToolFailed(f"the tool '{name}' failed: {exc.error.message}") from None
        except ValidationError:
            raise ToolFailed(f"the tool '{name}' answered with a malformed result") from None
        except Exception as exc:  # a transport or session fault: the server's, not the bridge's
            link.wake()
            reason = describe_failure(exc, link.settings.secrets())
            raise ToolFailed(f"the tool '{name}' failed: {reason}") from None
        return result_text(name, result)
