"""`python -m sandbox.mcp_server`: stdio; `--http --port N [--host H]`: streamable HTTP at /mcp."""

from __future__ import annotations

from sandbox.mcp_server.server import build_server, serve

if __name__ == "__main__":
    serve(build_server(), prog="python -m sandbox.mcp_server")
