"""A whole bridge built by the composition root (`bridge.app.build`) from a configuration file,
run in this process against the emulators and the local LLM server, as `chat-bridge run` would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bridge.app import Bridge, build
from bridge.config import load_settings

LLM_KEY = {"CHAT_BRIDGE_LLM__API_KEY": "sk-local-test-key"}


def base_config(db: Path, llm_base_url: str) -> str:
    return (
        f'[storage]\nurl = "sqlite+aiosqlite:///{db}"\n'
        f'[llm]\nbase_url = "{llm_base_url}"\nmodel = "local"\ntitles = false\n'
        'system_prompt = "default prompt"\n'
        "[streaming]\nedit_interval = 0.2\n"
    )


class WallClock:
    """The UTC time the bridge reads the quotas' day from; a test moves it."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def next_day(self) -> None:
        now = self()
        midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=1, microsecond=0)
        self.offset += midnight - now


async def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not (result := check()):  # noqa: ASYNC110 (emulator state has no event)
            await asyncio.sleep(0.05)
        return result


@asynccontextmanager
async def whole_bridge(
    config: Path, env: dict[str, str], *, wall: WallClock | None = None
) -> AsyncIterator[Bridge]:
    env = {**LLM_KEY, **env}
    bridge = await build(load_settings(config, env), config_path=config, environ=env, wall=wall)
    running = asyncio.create_task(bridge.lifecycle.run(bridge.services, handle_signals=False))
    try:
        platforms = [s for s in bridge.services if s.name in ("slack", "discord")]
        await eventually(
            lambda: running.done() or all(getattr(p, "connected", False) for p in platforms)
        )
        if running.done():
            raise AssertionError(f"the bridge did not start: {running.result()}")
        yield bridge
    finally:
        bridge.lifecycle.request_stop()
        code = await asyncio.wait_for(running, timeout=30)
        await bridge.store.close()
        if bridge.close is not None:
            await bridge.close()
        assert code == 0, code


async def settled(bridge: Bridge) -> None:
    """Every reply begun so far has ended."""
    await eventually(lambda: not bridge.responder.in_flight)
    await asyncio.sleep(0.1)
