"""The operations adapter: Prometheus metrics and a health check over HTTP (aiohttp)."""

from adapters.ops.server import ConnectionProbe, OpsServer

__all__ = ["ConnectionProbe", "OpsServer"]
