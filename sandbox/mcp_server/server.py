"""The sandbox's MCP server (the SDK's `MCPServer`, once FastMCP) with three harmless tools:
`now`, `calculate` and `search_docs`; and `serve`, which runs one over stdio or streamable HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from sandbox.mcp_server import calculator
from sandbox.mcp_server.documents import DOCUMENTS, search

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def build_server(*, clock: Clock = _utc_now, name: str = "sandbox") -> MCPServer:
    # WARNING: no line per request from the server or uvicorn (stdio servers' stderr is logged
    # by the bridge at debug; a failing tool is the model's business, not the log's).
    server: MCPServer = MCPServer(name, log_level="WARNING")

    def now(timezone: str = "UTC") -> str:
        """The current date and time, in an IANA time zone such as "Europe/Paris" (UTC when
        none is given)."""
        try:
            zone = ZoneInfo(timezone.strip() or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            raise ToolError(
                f"unknown time zone {timezone!r}; use an IANA name such as Europe/Paris"
            ) from None
        moment = clock().astimezone(zone)
        offset = moment.strftime("%z")
        return (
            f"{moment:%A %d %B %Y, %H:%M:%S} {moment.tzname()} "
            f"(UTC{offset[:3]}:{offset[3:]}, {zone.key}); ISO 8601: "
            f"{moment.isoformat(timespec='seconds')}"
        )

    def calculate(expression: str) -> str:
        """Evaluate an arithmetic expression: numbers, + - * / ** % and parentheses, for
        example "(17 + 4) * 3 / 2" or "2 ** 10 % 7"."""
        try:
            value = calculator.calculate(expression)
        except calculator.CalculationError as exc:
            raise ToolError(str(exc)) from None
        return f"{expression.strip()} = {calculator.format_number(value)}"

    def search_docs(query: str, limit: int = 3) -> str:
        """Search the documentation of chat-bridge (what it is, the sandbox, tools over MCP,
        limits and quotas, admin commands, streaming, crashes and deploys); returns the best
        matching documents with their titles."""
        matches = search(query, limit=min(max(limit, 1), len(DOCUMENTS)))
        if not matches:
            titles = "; ".join(document.title for document in DOCUMENTS)
            return f"No document matches {query!r}. The documents: {titles}."
        return "\n\n".join(f"## {document.title}\n{document.text}" for document, _ in matches)

    server.add_tool(now, name="now", title="Current date and time", structured_output=False)
    server.add_tool(calculate, name="calculate", title="Calculator", structured_output=False)
    server.add_tool(
        search_docs, name="search_docs", title="Search the docs", structured_output=False
    )
    return server


def serve(server: MCPServer, argv: Sequence[str] | None = None, *, prog: str) -> None:
    """Run `server` over stdio (the default) or, with --http, streamable HTTP at /mcp."""
    parser = argparse.ArgumentParser(prog=prog, description="The sandbox's MCP server.")
    parser.add_argument("--http", action="store_true", help="streamable HTTP instead of stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args(argv)
    if args.http:
        # What `run_streamable_http_async` does, but a stop (SIGINT, SIGTERM) waits at most 2 s
        # for open connections: a connected bridge holds a stream open for as long as it runs.
        app = server.streamable_http_app(host=args.host)
        config = uvicorn.Config(
            app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=2
        )
        asyncio.run(uvicorn.Server(config).serve())
    else:
        # Ends when stdin closes (the bridge ends the session).
        asyncio.run(server.run_stdio_async())
