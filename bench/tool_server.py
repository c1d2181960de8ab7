"""The tools benchmark's MCP server: `echo` (a fast tool) and `slow` (a server with latency), over
stdio (the bridge starts it) or streamable HTTP (the harness does).

    python -m bench.tool_server                      # stdio
    python -m bench.tool_server --http --port 8765   # http://127.0.0.1:8765/mcp

`slow` answers with when it started and ended on this process's `time.monotonic()`, which is
CLOCK_MONOTONIC, one clock for every process on Linux: the harness compares the tool's own time
with the time the bridge saw the call take.
"""

from __future__ import annotations

import asyncio
import time

from mcp.server.mcpserver import MCPServer

from sandbox.mcp_server import serve

SERVER_NAME = "bench"  # the name in the bridge's [[mcp.servers]]: its tools are "bench.<tool>"


def build_bench_server() -> MCPServer:
    server: MCPServer = MCPServer(SERVER_NAME, log_level="WARNING")

    async def slow(seconds: float) -> str:
        """Sleep `seconds`; returns "<started> <ended>" on the system's monotonic clock."""
        started = time.monotonic()
        await asyncio.sleep(seconds)
        return f"{started} {time.monotonic()}"

    def echo(text: str) -> str:
        """Return `text`."""
        return text

    for tool in (slow, echo):
        server.add_tool(tool, structured_output=False)
    return server


def tool_times(result: str) -> tuple[float, float] | None:
    """`slow`'s own start and end from its result; None for any other result."""
    parts = result.split()
    if len(parts) != 2:
        return None
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        return None


if __name__ == "__main__":
    serve(build_bench_server(), prog="python -m bench.tool_server")
