"""The bundled MCP server of the offline sandbox: harmless tools (`now`, `calculate`,
`search_docs`) over stdio or streamable HTTP. `python -m sandbox.mcp_server [--http --port N]`."""

from sandbox.mcp_server.server import build_server, serve

__all__ = ["build_server", "serve"]
