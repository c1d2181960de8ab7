"""Where a stdio server's stderr goes: a pipe read by the event loop, each line logged at debug
on `adapters.mcp.stderr` (so it never lands on the bridge's own stderr or in test output).

Its end of file tells that the process (and any child holding the pipe) has exited.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from typing import TextIO

from bridge.redaction import Redactor

log = logging.getLogger(__name__)

# A line longer than this is logged in pieces (a server dumping a blob must not grow a buffer).
_MAX_LINE = 4096


class ServerStderr:
    """A pipe whose write end is the child's stderr. Use as `async with`, pass `write_end` to
    the spawn, then call `spawned()` so that only the child holds the write end."""

    def __init__(
        self,
        server: str,
        secrets: Sequence[str] = (),
        on_eof: Callable[[], None] | None = None,
    ) -> None:
        self._server = server
        # Every secret, however short: a server's own output is no place for any of them.
        self._secrets = Redactor(secrets, min_chars=1, mark="***")
        self._on_eof = on_eof
        read_fd, write_fd = os.pipe()
        self._read_file = os.fdopen(read_fd, "rb", buffering=0)
        self.write_end: TextIO = os.fdopen(write_fd, "w", encoding="utf-8", errors="replace")
        self._transport: asyncio.ReadTransport | None = None
        self._pump: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ServerStderr:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        try:
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), self._read_file
            )
        except BaseException:
            self.write_end.close()
            self._read_file.close()
            raise
        self._transport = transport
        self._pump = asyncio.create_task(self._log_lines(reader), name=f"mcp-stderr:{self._server}")
        return self

    def spawned(self) -> None:
        """The child has its copy of the write end: close ours, so the pipe ends when it exits."""
        self.write_end.close()

    async def __aexit__(self, *exc_info: object) -> None:
        self.write_end.close()
        pump = self._pump
        try:
            if pump is not None:
                # The child is gone by now: its last lines are in the pipe. A grandchild that
                # kept the pipe open must not hold the shutdown.
                await asyncio.wait({pump}, timeout=0.5)
        finally:
            if pump is not None:
                pump.cancel()
            if self._transport is not None:
                self._transport.close()

    async def _log_lines(self, reader: asyncio.StreamReader) -> None:
        pending = b""
        while True:
            chunk = await reader.read(_MAX_LINE)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if len(pending) >= _MAX_LINE:
                lines.append(pending)
                pending = b""
            for line in lines:
                self._log(line)
        if pending:
            self._log(pending)
        if self._on_eof is not None:
            self._on_eof()

    def _log(self, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip()
        if not line:
            return
        line = self._secrets.redact(line)
        log.debug("mcp server %s: %s", self._server, line)
