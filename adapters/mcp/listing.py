"""What `chat-bridge tools` shows: each configured server connected once, its tools listed (and
whether `allowed_tools` lets them be offered), then disconnected.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Literal, NamedTuple

from adapters.mcp.connection import describe_failure, fetch_tools, open_client, transport_of
from adapters.mcp.toolbox import is_allowed
from bridge.tools.settings import MCPServerSettings, MCPSettings

# A description is cut to its first line, and to this many characters, in `format_tools`.
_DESCRIPTION_CHARS = 100


class ListedTool(NamedTuple):
    name: str  # the server's own name for it
    description: str
    allowed: bool  # in the server's `allowed_tools` (or that list is empty)


@dataclass(frozen=True, slots=True)
class ServerTools:
    server: str
    transport: Literal["stdio", "http"]
    error: str | None  # why the server could not be listed; None when it was
    tools: tuple[ListedTool, ...] = ()


# A timeout parameter rather than the caller's asyncio.timeout: it applies to each server, so a
# slow one is reported as such while the others' listings are kept.
async def list_tools(settings: MCPSettings, timeout: float = 10.0) -> list[ServerTools]:  # noqa: ASYNC109
    """Every configured server's tools, servers in config order, listed in parallel; a server
    that does not answer within `timeout` seconds is reported with an error."""
    return list(await asyncio.gather(*(_list(server, timeout) for server in settings.servers)))


async def _list(server: MCPServerSettings, seconds: float) -> ServerTools:
    transport = transport_of(server)
    try:
        async with AsyncExitStack() as stack:
            # The timeout covers connecting and listing; ending the session (a process has a
            # few seconds to exit) happens outside it.
            async with asyncio.timeout(seconds):
                client = await stack.enter_async_context(open_client(server))
                tools = await fetch_tools(client)
    except TimeoutError:
        return ServerTools(server.name, transport, f"no answer within {seconds:g} s")
    except Exception as exc:
        return ServerTools(server.name, transport, describe_failure(exc, server.secrets()))
    listed = tuple(
        ListedTool(tool.name, tool.description or tool.title or "", is_allowed(server, tool.name))
        for tool in tools
    )
    return ServerTools(server.name, transport, None, listed)


def format_tools(servers: list[ServerTools]) -> list[str]:
    """Lines for people: a heading per server, then one line per tool by its qualified name."""
    if not servers:
        return ["no MCP servers configured ([[mcp.servers]])"]
    lines: list[str] = []
    for server in servers:
        if server.error is not None:
            lines.append(f"{server.server} ({server.transport}): unavailable: {server.error}")
            continue
        offered = sum(tool.allowed for tool in server.tools)
        count = f"{len(server.tools)} tool{'s' if len(server.tools) != 1 else ''}"
        if offered != len(server.tools):
            count += f", {offered} allowed"
        lines.append(f"{server.server} ({server.transport}): {count}")
        for tool in server.tools:
            line = f"  {server.server}.{tool.name}"
            description = _first_line(tool.description)
            if description:
                line += f": {description}"
            if not tool.allowed:
                line += "  [not in allowed_tools]"
            lines.append(line)
    return lines


def _first_line(text: str) -> str:
    line = text.strip().split("\n", 1)[0].strip()
    if len(line) > _DESCRIPTION_CHARS:
        line = line[: _DESCRIPTION_CHARS - 1].rstrip() + "…"
    return line
