"""A loopback aiohttp server with an explicit start/stop lifecycle.

Every emulator (Slack, Discord, the LLM) runs on one of these so that tests, the sandbox and the
benchmarks start and stop them the same way, on a free port picked by the OS.
"""

from __future__ import annotations

from aiohttp import web


class LocalServer:
    """Serves one aiohttp Application on 127.0.0.1 (port 0 picks a free port)."""

    def __init__(self, app: web.Application, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self._requested_port = port
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        # The default backlog (128) overflows when hundreds of clients connect at once (the
        # benchmarks), and the kernel then makes them retry a second later.
        site = web.TCPSite(
            self._runner, self.host, self._requested_port, reuse_address=True, backlog=4096
        )
        await site.start()
        # aiohttp exposes no public accessor for the bound port of a TCPSite.
        sockets = getattr(site._server, "sockets", None)
        assert sockets, "the server did not bind"
        self._port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> LocalServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
