"""The sandbox's MCP server with tools for the tests: `slow`, `echo`, `fail`, `secret_env`,
`in_flight`, `pid` and `grow`. Run as a script: `python tool_server.py [--http --port N]`.

Not a test module (pytest collects `test_*.py` only); the tests start it as a real process.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from sandbox.mcp_server import build_server, serve

READY_LINE = "tool server: ready"


def build_test_server() -> MCPServer:
    server = build_server(name="test")
    running = 0

    async def slow(seconds: float) -> str:
        """Sleep `seconds`; returns when it started and ended (this process's monotonic clock)."""
        nonlocal running
        running += 1
        started = time.monotonic()
        try:
            await asyncio.sleep(seconds)
        finally:
            running -= 1
        return f"{started} {time.monotonic()}"

    def echo(text: str) -> str:
        """Return `text`."""
        return text

    def fail(message: str) -> str:
        """Answer with an error result (isError) saying `message`."""
        raise ToolError(message)

    def secret_env(name: str) -> str:
        """The value of the environment variable `name` ("" when unset)."""
        return os.environ.get(name, "")

    def in_flight() -> int:
        """How many `slow` calls are running."""
        return running

    def pid() -> int:
        """This server's process id."""
        return os.getpid()

    async def grow(name: str, ctx: Context) -> str:
        """Add a tool called `name` and announce that the tool list changed."""
        server.add_tool(lambda: name, name=name, description="added at run time")
        await ctx.notify_tools_changed()
        return "added"

    for tool in (slow, echo, fail, secret_env, in_flight, pid, grow):
        server.add_tool(tool, structured_output=False)
    return server


if __name__ == "__main__":
    # Something on stderr: the bridge must log it, not print it.
    print(READY_LINE, file=sys.stderr, flush=True)
    serve(build_test_server(), prog="tool_server.py")
