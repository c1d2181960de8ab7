"""Real MCP servers for the tests: `tool_server.py` as a child of the toolbox (stdio) or as a
process serving streamable HTTP on a free 127.0.0.1 port; and a toolbox stopped after each test."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.mcp import MCPToolBox
from bridge.tools.settings import MCPServerSettings, MCPSettings

TOOL_SERVER = str(Path(__file__).with_name("tool_server.py"))
# Generous: a loaded two-core machine takes seconds to start a Python process that imports the SDK.
DEADLINE = 45.0


def stdio_server(name: str = "t", **kwargs: Any) -> MCPServerSettings:
    return MCPServerSettings(name=name, command=sys.executable, args=[TOOL_SERVER], **kwargs)


def http_server(port: int, name: str = "h", **kwargs: Any) -> MCPServerSettings:
    return MCPServerSettings(name=name, url=f"http://127.0.0.1:{port}/mcp", **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]], what: str, within: float = DEADLINE
) -> None:
    """Poll `condition` until it holds; fail naming `what` past `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class HttpToolServer:
    """`tool_server.py --http` on 127.0.0.1:`port`, as a process of its own."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._process: asyncio.subprocess.Process | None = None

    @property
    def settings(self) -> MCPServerSettings:
        return http_server(self.port)

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            TOOL_SERVER,
            "--http",
            "--port",
            str(self.port),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await wait_for(self._listening, f"the HTTP tool server on port {self.port}")

    async def _listening(self) -> bool:
        assert self._process is not None
        if self._process.returncode is not None:
            pytest.fail(f"the HTTP tool server exited with {self._process.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    async def kill(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()

    async def stop(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            pass
        await self.kill()


@pytest.fixture
async def http_tool_server() -> AsyncIterator[HttpToolServer]:
    server = HttpToolServer()
    await server.start()
    yield server
    await server.stop()


ToolBoxFactory = Callable[..., Awaitable[MCPToolBox]]


@pytest.fixture
async def make_toolbox() -> AsyncIterator[ToolBoxFactory]:
    """Started toolboxes over these servers (retrying every 0.1 s), stopped after the test."""
    boxes: list[MCPToolBox] = []

    async def make(*servers: MCPServerSettings, **settings: Any) -> MCPToolBox:
        box = MCPToolBox(MCPSettings(servers=list(servers), **settings), retry_delays=(0.1,))
        boxes.append(box)
        await box.start()
        return box

    yield make
    for box in boxes:
        await box.stop()


async def until_up(box: MCPToolBox, *names: str) -> None:
    """Wait until `box` offers all these qualified tool names."""

    def offered() -> bool:
        return set(names) <= {spec.name for spec in box.available(["*"])}

    await wait_for(offered, f"the tools {', '.join(names)}")
