"""MCPToolBox against real servers: `tool_server.py` as a child over stdio, and as a process
serving streamable HTTP on 127.0.0.1. Conditions are polled with a deadline, never slept for."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import pytest
from pydantic import SecretStr

from adapters.mcp import MCPToolBox
from bridge.ports import ToolFailed
from bridge.tools.settings import MCPServerSettings, MCPSettings
from tests.adapters.mcp.conftest import (
    HttpToolServer,
    ToolBoxFactory,
    free_port,
    http_server,
    stdio_server,
    until_up,
    wait_for,
)
from tests.adapters.mcp.tool_server import READY_LINE

TEST_TOOLS = ["now", "calculate", "search_docs", "slow", "echo", "fail", "secret_env"]


@pytest.fixture(params=["stdio", "http"])
def server(request: pytest.FixtureRequest) -> MCPServerSettings:
    """The tool server over each transport, named "t"."""
    if request.param == "stdio":
        return stdio_server("t")
    http: HttpToolServer = request.getfixturevalue("http_tool_server")
    return http_server(http.port, "t")


async def test_lists_the_tools_with_their_schemas(
    server: MCPServerSettings, make_toolbox: ToolBoxFactory
) -> None:
    box = await make_toolbox(server)
    await until_up(box, "t.echo")

    specs = box.available(["*"])
    names = [spec.name for spec in specs]
    # The server's order, qualified by the server's name.
    assert names[: len(TEST_TOOLS)] == [f"t.{tool}" for tool in TEST_TOOLS]
    echo = next(spec for spec in specs if spec.name == "t.echo")
    assert echo.description == "Return `text`."
    assert echo.parameters["type"] == "object"
    assert echo.parameters["required"] == ["text"]
    assert echo.parameters["properties"]["text"]["type"] == "string"


async def test_a_call_returns_the_tool_text(
    server: MCPServerSettings, make_toolbox: ToolBoxFactory
) -> None:
    box = await make_toolbox(server)
    await until_up(box, "t.echo", "t.calculate")

    assert await box.call("t.echo", {"text": "héllo\nworld"}) == "héllo\nworld"
    assert await box.call("t.calculate", {"expression": "(17 + 4) * 3 / 2"}) == (
        "(17 + 4) * 3 / 2 = 31.5"
    )


async def test_calls_run_concurrently_over_one_session(
    server: MCPServerSettings, make_toolbox: ToolBoxFactory
) -> None:
    box = await make_toolbox(server)
    await until_up(box, "t.slow")

    first, second = await asyncio.gather(
        box.call("t.slow", {"seconds": 0.5}), box.call("t.slow", {"seconds": 0.5})
    )

    (start_1, end_1), (start_2, end_2) = (map(float, r.split()) for r in (first, second))
    # Both sleeps were under way at once on the server (its own clock), however loaded the
    # machine: one call started before the other ended, each way.
    assert start_1 < end_2 and start_2 < end_1


async def test_a_call_past_its_timeout_fails_and_is_cancelled_on_the_server(
    server: MCPServerSettings, make_toolbox: ToolBoxFactory
) -> None:
    box = await make_toolbox(server.model_copy(update={"timeout": 0.5}))
    await until_up(box, "t.slow", "t.in_flight")

    with pytest.raises(ToolFailed) as failed:
        await box.call("t.slow", {"seconds": 60})

    assert failed.value.timed_out
    assert "timed out after 0.5 s" in str(failed.value)

    async def cancelled_on_server() -> bool:
        return await box.call("t.in_flight", {}) == "0"

    await wait_for(cancelled_on_server, "the server to cancel the timed-out call")
    assert await box.call("t.echo", {"text": "still here"}) == "still here"


async def test_an_error_result_fails_with_its_text(make_toolbox: ToolBoxFactory) -> None:
    box = await make_toolbox(stdio_server("t"))
    await until_up(box, "t.fail")

    with pytest.raises(ToolFailed) as failed:
        await box.call("t.fail", {"message": "the disk is full"})

    assert "the disk is full" in str(failed.value)
    assert not failed.value.timed_out


async def test_arguments_the_tool_refuses_fail(make_toolbox: ToolBoxFactory) -> None:
    box = await make_toolbox(stdio_server("t"))
    await until_up(box, "t.echo")

    with pytest.raises(ToolFailed):
        await box.call("t.echo", {"wrong": 1})


async def test_allowed_tools_and_selections(
    http_tool_server: HttpToolServer, make_toolbox: ToolBoxFactory
) -> None:
    box = await make_toolbox(
        stdio_server("a", allowed_tools=["echo", "now"]),
        http_server(http_tool_server.port, "b", allowed_tools=["calculate"]),
    )
    await until_up(box, "a.echo", "b.calculate")

    # Config order of the servers, then each server's order; only allowed tools.
    assert [s.name for s in box.available(["*"])] == ["a.now", "a.echo", "b.calculate"]
    assert [s.name for s in box.available(["a.*"])] == ["a.now", "a.echo"]
    assert [s.name for s in box.available(["b.calculate", "a.echo"])] == ["a.echo", "b.calculate"]
    assert box.available(["a.slow", "b.echo", "c.*"]) == ()
    assert box.available([]) == ()

    with pytest.raises(ToolFailed, match="not allowed"):
        await box.call("a.slow", {"seconds": 0})
    with pytest.raises(ToolFailed, match="unknown tool"):
        await box.call("c.echo", {"text": "x"})
    with pytest.raises(ToolFailed, match="unknown tool"):
        await box.call("echo", {"text": "x"})
    assert await box.call("b.calculate", {"expression": "2 ** 10"}) == "2 ** 10 = 1024"


async def test_tool_list_changes_are_followed(make_toolbox: ToolBoxFactory) -> None:
    box = await make_toolbox(stdio_server("t"))
    await until_up(box, "t.grow")

    assert await box.call("t.grow", {"name": "extra"}) == "added"

    await until_up(box, "t.extra")
    assert await box.call("t.extra", {}) == "extra"


async def test_a_server_down_at_start_is_picked_up_when_it_comes(
    make_toolbox: ToolBoxFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="adapters.mcp.link")
    port = free_port()
    settings = http_server(port, "late", headers={"Authorization": SecretStr("Bearer s3cr3t")})
    box = await make_toolbox(settings, stdio_server("t"))
    await until_up(box, "t.echo")

    assert not [s for s in box.available(["*"]) if s.name.startswith("late.")]
    with pytest.raises(ToolFailed, match="'late' is not available"):
        await box.call("late.echo", {"text": "x"})

    def warned() -> bool:
        return any(
            r.levelno == logging.WARNING and "'late'" in r.getMessage() for r in caplog.records
        )

    def retried() -> bool:
        return any("'late' still down" in r.getMessage() for r in caplog.records)

    await wait_for(warned, "the warning about the server being down")
    # Attempts fail every 0.1 s meanwhile; the outage is told once (the others at debug).
    await wait_for(retried, "another attempt")
    server = HttpToolServer(port)
    try:
        await server.start()
        await until_up(box, "late.echo")
        assert await box.call("late.echo", {"text": "hi"}) == "hi"
        late = [r for r in caplog.records if "'late'" in r.getMessage()]
    finally:
        await box.stop()
        await server.stop()

    warnings = [r for r in late if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "ConnectError" in warnings[0].getMessage()
    assert any(r.levelno == logging.INFO and "is back" in r.getMessage() for r in late)
    assert "s3cr3t" not in caplog.text


async def test_an_http_server_that_dies_goes_down_and_comes_back(
    http_tool_server: HttpToolServer, make_toolbox: ToolBoxFactory
) -> None:
    box = await make_toolbox(http_tool_server.settings)
    await until_up(box, "h.echo")

    await http_tool_server.kill()

    await wait_for(lambda: box.available(["*"]) == (), "the dead server's tools to vanish")
    with pytest.raises(ToolFailed, match="'h' is not available"):
        await box.call("h.echo", {"text": "x"})

    await http_tool_server.start()
    await until_up(box, "h.echo")
    assert await box.call("h.echo", {"text": "back"}) == "back"


async def test_a_stdio_server_that_dies_mid_call_fails_the_call_and_is_restarted(
    make_toolbox: ToolBoxFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="adapters.mcp")
    box = await make_toolbox(stdio_server("t"))
    await until_up(box, "t.pid", "t.slow")
    pid = int(await box.call("t.pid", {}))
    call = asyncio.create_task(box.call("t.slow", {"seconds": 60}))

    async def in_flight() -> bool:
        return await box.call("t.in_flight", {}) == "1"

    await wait_for(in_flight, "the slow call to start")
    os.kill(pid, signal.SIGKILL)

    with pytest.raises(ToolFailed) as failed:
        await call
    assert not failed.value.timed_out

    async def restarted() -> bool:
        try:
            return int(await box.call("t.pid", {})) != pid
        except ToolFailed:
            return False

    await wait_for(restarted, "a new server process")
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [m for m in messages if "'t' is down" in m]


async def test_a_stdio_server_gets_a_minimal_environment_and_its_env(
    make_toolbox: ToolBoxFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAT_BRIDGE_TEST_LEAK", "bridge secret")
    box = await make_toolbox(stdio_server("t", env={"API_TOKEN": SecretStr("tok-123")}))
    await until_up(box, "t.secret_env")

    assert await box.call("t.secret_env", {"name": "API_TOKEN"}) == "tok-123"
    assert await box.call("t.secret_env", {"name": "CHAT_BRIDGE_TEST_LEAK"}) == ""
    assert await box.call("t.secret_env", {"name": "PATH"}) == os.environ["PATH"]


async def test_a_stdio_server_stderr_goes_to_the_debug_log(
    make_toolbox: ToolBoxFactory,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG, logger="adapters.mcp.stderr")
    box = await make_toolbox(stdio_server("t"))
    await until_up(box, "t.echo")

    def logged() -> bool:
        return any(READY_LINE in r.getMessage() for r in caplog.records)

    await wait_for(logged, "the server's stderr line in the log")
    record = next(r for r in caplog.records if READY_LINE in r.getMessage())
    assert record.levelno == logging.DEBUG
    assert record.getMessage() == f"mcp server t: {READY_LINE}"
    assert READY_LINE not in capfd.readouterr().err


async def test_start_returns_at_once_and_stop_leaves_no_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    box = MCPToolBox(
        # A server that never answers: start() must not wait for it, stop() must end it.
        MCPSettings(servers=[stdio_server("t"), _silent_server("mute")]),
        retry_delays=(0.1,),
    )
    async with asyncio.timeout(1):
        await box.start()
    await until_up(box, "t.pid")
    pid = int(await box.call("t.pid", {}))

    await box.stop()

    assert box.available(["*"]) == ()
    assert not _alive(pid)
    assert _children() == []  # the silent server too
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("mcp")]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def _silent_server(name: str) -> MCPServerSettings:
    # Reads its stdin and never answers: an MCP server stuck while starting.
    return MCPServerSettings(
        name=name, command=sys.executable, args=["-c", "import sys\nfor _ in sys.stdin: pass"]
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie counts as gone only once reaped; the SDK waits for the exit.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def _children() -> list[int]:
    """This process's live (not zombie) child processes."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # pid (comm) state ppid ...: comm may hold spaces, so split after its ")".
                state, ppid = stat.read().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue
        if int(ppid) == os.getpid() and state != "Z":
            children.append(int(entry))
    return children
