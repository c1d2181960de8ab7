"""`python -m adapters.ops.probe --config FILE`: exit 0 when the bridge's /healthz answers 200,
else 1. The container's HEALTHCHECK: it reads ops.host and ops.port wherever they were set.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from bridge.config import ConfigError, OpsSettings, load_settings

# A bridge listening on every interface is probed on loopback, from inside its own host.
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}
# Well within Docker's default HEALTHCHECK timeout of 30 s.
PROBE_TIMEOUT = 5.0


def health_url(settings: OpsSettings) -> str:
    host = _LOOPBACK.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/healthz"


async def probe(settings: OpsSettings) -> tuple[bool, str]:
    """(healthy, what it answered or why nothing did)."""
    url = health_url(settings)
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT)) as http,
            http.get(url) as response,
        ):
            return response.status == 200, f"{response.status} {await response.text()}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return False, f"{url}: {type(exc).__name__}: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adapters.ops.probe", description="Ask a running bridge's /healthz."
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="the bridge's TOML file")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 1
    if not settings.ops.enabled:
        print("ops.enabled is false: the bridge serves no /healthz", file=sys.stderr)
        return 1
    healthy, detail = asyncio.run(probe(settings.ops))
    print(detail)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
