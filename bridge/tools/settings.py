"""The `[mcp]` section: which MCP servers the bridge connects, and what tools it offers where.

A tool is named by its server, "server.tool"; a selection (`default_tools`, an override's
`tools`) lists such names, "server.*" for all of a server's tools, or "*" for every tool.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, model_validator

SERVER_NAME = r"^[A-Za-z0-9_-]{1,32}$"
# "*", "server.*" or "server.tool" (a tool's own name is the server's business: any characters).
SELECTION = r"^(\*|[A-Za-z0-9_-]{1,32}\.(\*|.{1,128}))$"
ToolName = Annotated[str, StringConstraints(pattern=SELECTION, strict=True)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MCPServerSettings(_Section):
    """One MCP server: a command the bridge starts (stdio), or a URL (streamable HTTP)."""

    name: Annotated[str, StringConstraints(pattern=SERVER_NAME, strict=True)]
    # stdio: the command and its arguments; `env` is added to a minimal environment (PATH, HOME...)
    # and its values are secrets (never logged, and cut out of every tool result).
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, SecretStr] = Field(default_factory=dict)
    # streamable HTTP: the endpoint, and headers sent with every request (secrets too).
    url: str | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    # The server's tools that may be offered at all (their own names); empty: all of them.
    allowed_tools: list[str] = Field(default_factory=list)
    # Seconds one tool call may take; past it the model is told it timed out.
    timeout: float = Field(default=30.0, gt=0, le=600)

    @model_validator(mode="after")
    def _one_transport(self) -> MCPServerSettings:
        if (self.command is None) == (self.url is None):
            raise ValueError("command: a server needs either command (stdio) or url (HTTP)")
        if self.url is not None and not re.match(r"^https?://", self.url):
            raise ValueError("url: must start with http:// or https://")
        if self.url is not None and (self.args or self.env):
            raise ValueError("args: only for a server started by command")
        if self.command is not None and self.headers:
            raise ValueError("headers: only for a server reached by url")
        return self

    def secrets(self) -> list[str]:
        return [v.get_secret_value() for v in (*self.env.values(), *self.headers.values())]


class MCPSettings(_Section):
    servers: list[MCPServerSettings] = Field(default_factory=list)
    # The tools offered where no [[overrides]] sets `tools`: "*" (every server's allowed tools),
    # "server.*", "server.tool"; [] offers none.
    default_tools: list[ToolName] = Field(default_factory=lambda: ["*"])
    # A tool result longer than this is cut (with a note saying so) before the model sees it.
    max_result_chars: int = Field(default=20_000, ge=100, le=1_000_000)
    # Under a reply that used tools; {tools}: their names ("`docs.search`, `time.now`").
    # Empty: no footer.
    footer: str = "🔧 _Used {tools}_"

    @model_validator(mode="after")
    def _unique_names(self) -> MCPSettings:
        seen: set[str] = set()
        for index, server in enumerate(self.servers):
            if server.name in seen:
                raise ValueError(f"servers.{index}.name: {server.name!r} is used twice")
            seen.add(server.name)
        try:
            self.footer.format(tools="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"footer: unknown placeholder or brace {exc}; allowed: {{tools}}"
            ) from None
        return self

    def unknown_servers(self, selection: Sequence[str]) -> list[str]:
        """Names of `selection` whose server is not declared."""
        names = {server.name for server in self.servers}
        return [s for s in selection if s != "*" and s.split(".", 1)[0] not in names]
