"""`OpsServer`: GET /metrics (the registry in Prometheus' text format) and GET /healthz (200 while
the bridge runs, 503 while it starts or stops) on their own port. A service of the lifecycle,
started first and stopped last, so it answers for the whole life of the process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from aiohttp import web

from adapters.listen import listen
from bridge.config import OpsSettings
from bridge.lifecycle import Lifecycle
from bridge.metrics import CONTENT_TYPE, Registry

log = logging.getLogger(__name__)


class ConnectionProbe(Protocol):
    """A platform adapter that can tell whether it is connected."""

    name: str

    @property
    def connected(self) -> bool: ...


class OpsServer:
    """Service "ops". Reads the lifecycle's phase and the platforms' connections per request."""

    def __init__(
        self,
        settings: OpsSettings,
        *,
        registry: Registry,
        lifecycle: Lifecycle,
        platforms: Sequence[ConnectionProbe] = (),
    ) -> None:
        self.name = "ops"
        self._settings = settings
        self._registry = registry
        self._lifecycle = lifecycle
        self._platforms = list(platforms)
        self._connected = registry.gauge(
            "chat_bridge_platform_connected",
            "1 while the platform's connection is up (Slack over HTTP: while listening), else 0.",
            ["platform"],
        )
        self._started_at = registry.gauge(
            "chat_bridge_start_time_seconds", "When this process started, in Unix time."
        )
        self._runner: web.AppRunner | None = None
        self._since = time.monotonic()

    @property
    def url(self) -> str:
        return f"http://{self._settings.host}:{self._settings.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        # No access log: a scrape every few seconds would drown the bridge's own lines.
        self._runner = await listen(
            app, host=self._settings.host, port=self._settings.port, section="ops"
        )
        self._since = time.monotonic()
        self._started_at.set(time.time())
        log.info("ops: metrics at %s/metrics, health at %s/healthz", self.url, self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _connections(self) -> dict[str, bool]:
        return {platform.name: platform.connected for platform in self._platforms}

    async def _metrics(self, request: web.Request) -> web.Response:
        # Connections are read when scraped: a gauge kept up to date by the adapters would need
        # a hook in each of their reconnect paths.
        for name, connected in self._connections().items():
            self._connected.labels(name).set(1.0 if connected else 0.0)
        body = self._registry.render().encode()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _healthz(self, request: web.Request) -> web.Response:
        phase = self._lifecycle.phase
        healthy = phase == "running"
        payload: dict[str, Any] = {
            "status": "ok" if healthy else phase,
            "services": list(self._lifecycle.started),
            "platforms": {name: {"connected": c} for name, c in self._connections().items()},
            "uptime_seconds": round(time.monotonic() - self._since, 1),
        }
        # A platform that reconnects on its own (Slack Socket Mode) is reported, not fatal: the
        # Discord adapter already stops the bridge when its gateway is gone for good.
        return web.json_response(payload, status=200 if healthy else 503)
