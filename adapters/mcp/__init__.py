"""Tools over MCP: the configured servers, kept connected, as the core's `ToolBox` port
(`MCPToolBox`), and the one-off listing behind `chat-bridge tools` (`list_tools`)."""

from adapters.mcp.listing import ListedTool, ServerTools, format_tools, list_tools
from adapters.mcp.toolbox import MCPToolBox

__all__ = ["ListedTool", "MCPToolBox", "ServerTools", "format_tools", "list_tools"]
