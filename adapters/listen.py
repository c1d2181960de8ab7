"""Serving one of the bridge's own aiohttp apps (the ops endpoint, the console) on its port, with
an error that names the section to change when the port is taken."""

from __future__ import annotations

from aiohttp import web


async def listen(app: web.Application, *, host: str, port: int, section: str) -> web.AppRunner:
    """Serve `app` on host:port (no access log: the caller logs what it needs); the runner to
    clean up at stop. RuntimeError naming `section`'s keys when it cannot listen."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise RuntimeError(
            f"{section}: cannot listen on {host}:{port} ({exc}); "
            f"set {section}.port to a free port or {section}.enabled = false"
        ) from exc
    return runner
