"""`list_tools` and `format_tools` (behind `chat-bridge tools`) against real servers."""

from __future__ import annotations

import sys

from adapters.mcp import ListedTool, ServerTools, format_tools, list_tools
from bridge.tools.settings import MCPServerSettings, MCPSettings
from tests.adapters.mcp.conftest import HttpToolServer, free_port, http_server


async def test_lists_every_server_once_with_errors_for_those_unreachable(
    http_tool_server: HttpToolServer,
) -> None:
    settings = MCPSettings(
        servers=[
            MCPServerSettings(
                name="sandbox", command=sys.executable, args=["-m", "sandbox.mcp_server"]
            ),
            http_server(http_tool_server.port, "web", allowed_tools=["echo"]),
            http_server(free_port(), "gone"),
            MCPServerSettings(name="typo", command="/nonexistent/mcp-server"),
        ]
    )

    listed = await list_tools(settings, timeout=30)

    assert [(s.server, s.transport) for s in listed] == [
        ("sandbox", "stdio"),
        ("web", "http"),
        ("gone", "http"),
        ("typo", "stdio"),
    ]
    sandbox, web, gone, typo = listed
    assert sandbox.error is None
    assert [t.name for t in sandbox.tools] == ["now", "calculate", "search_docs"]
    assert all(t.allowed and t.description for t in sandbox.tools)
    assert web.error is None
    assert ListedTool("echo", "Return `text`.", True) in web.tools
    assert ListedTool("fail", "Answer with an error result (isError) saying `message`.", False) in (
        web.tools
    )
    assert gone.error is not None and "ConnectError" in gone.error
    assert not gone.tools
    assert typo.error is not None and "No such file" in typo.error


async def test_a_server_that_never_answers_is_reported_within_the_timeout() -> None:
    mute = MCPServerSettings(
        name="mute", command=sys.executable, args=["-c", "import sys\nfor _ in sys.stdin: pass"]
    )

    listed = await list_tools(MCPSettings(servers=[mute]), timeout=2)

    assert listed == [ServerTools("mute", "stdio", "no answer within 2 s")]


def test_format_tools_reads_as_a_list_per_server() -> None:
    servers = [
        ServerTools(
            "docs",
            "stdio",
            None,
            (
                ListedTool("search", "Search the docs.\nMore detail here.", True),
                ListedTool("delete", "", False),
            ),
        ),
        ServerTools("web", "http", "ConnectError: All connection attempts failed"),
        ServerTools("one", "http", None, (ListedTool("now", "x" * 150, True),)),
    ]

    assert format_tools(servers) == [
        "docs (stdio): 2 tools, 1 allowed",
        "  docs.search: Search the docs.",
        "  docs.delete  [not in allowed_tools]",
        "web (http): unavailable: ConnectError: All connection attempts failed",
        "one (http): 1 tool",
        "  one.now: " + "x" * 99 + "…",
    ]
    assert format_tools([]) == ["no MCP servers configured ([[mcp.servers]])"]
