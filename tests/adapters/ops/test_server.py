"""The ops endpoint over real HTTP: a whole bridge (real slack-bolt against the Slack emulator,
openai against the local LLM) scraped while it answers, and /healthz through start and stop."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.ops import OpsServer
from adapters.ops.probe import probe
from bridge.app import build
from bridge.config import OpsSettings, load_settings
from bridge.lifecycle import Lifecycle
from bridge.metrics import Registry
from sandbox.llm_server import LLMServer, ScriptedReply
from sandbox.slack_emulator import SlackEmulator

ROOT = Path(__file__).resolve().parents[3]
ANSWER = "Metrics move while the bridge answers, one streamed piece at a time."
GENERAL = "C0GENERAL"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in a scrape; 0 when the series is absent."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if found == labels:
            return float(match.group(3))
    return 0.0


async def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:  # noqa: ASYNC109
    """Retry an async check until it returns a truthy value."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                result = await check()
            except (aiohttp.ClientError, AssertionError):
                result = None
            if result:
                return result
            await asyncio.sleep(0.05)


async def test_a_running_bridge_reports_its_reply_and_its_health(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with SlackEmulator() as emu, LLMServer(tick=0.01) as llm:
        llm.script(ScriptedReply(text=ANSWER, tokens_per_second=60))
        config = tmp_path / "config.toml"
        config.write_text(
            f'[storage]\nurl = "sqlite+aiosqlite:///{tmp_path / "bridge.db"}"\n'
            f'[llm]\nbase_url = "{llm.base_url}"\nmodel = "local"\ntitles = false\n'
            "[streaming]\nedit_interval = 0.2\n"
            f'[slack]\nenabled = true\nmode = "socket"\napi_base_url = "{emu.api_base_url}"\n'
            f"[ops]\nenabled = true\nport = {port}\n"
        )
        secrets = {
            "CHAT_BRIDGE_LLM__API_KEY": "sk-local-test-key",
            "CHAT_BRIDGE_SLACK__BOT_TOKEN": emu.identity.bot_token,
            "CHAT_BRIDGE_SLACK__APP_TOKEN": emu.identity.app_token,
        }
        bridge = await build(load_settings(config, secrets))
        assert [s.name for s in bridge.services][0] == "ops"
        running = asyncio.create_task(bridge.lifecycle.run(bridge.services, handle_signals=False))
        try:
            async with aiohttp.ClientSession() as http:

                async def healthy() -> dict[str, Any] | None:
                    async with http.get(f"{base}/healthz") as response:
                        return await response.json() if response.status == 200 else None

                health = await eventually(healthy)
                assert health["status"] == "ok"
                assert health["platforms"] == {"slack": {"connected": True}}
                services = ["ops", "llm", "housekeeping", "policy", "slack", "responder"]
                assert health["services"] == services

                slack = {"platform": "slack"}
                ts = await emu.user_message(GENERAL, "<@U0BOT> how are we doing?", user="U0ALICE")

                async def scraped() -> str | None:
                    async with http.get(f"{base}/metrics") as response:
                        assert response.status == 200
                        assert response.headers["Content-Type"] == (
                            "text/plain; version=0.0.4; charset=utf-8"
                        )
                        text = await response.text()
                    done = sample(text, "chat_bridge_replies_total", **slack, status="complete")
                    # Slack sends a mention twice (app_mention, message): one is skipped.
                    skipped = sample(text, "chat_bridge_events_total", **slack, outcome="duplicate")
                    return text if done == 1 and skipped == 1 else None

                text = await eventually(scraped)
                replies = [m for m in emu.thread(GENERAL, ts) if m.bot_id]
                assert replies and replies[-1].text == ANSWER

                assert sample(text, "chat_bridge_replies_total", **slack, status="failed") == 0
                assert sample(text, "chat_bridge_events_total", **slack, outcome="handled") == 1
                assert sample(text, "chat_bridge_active_replies", **slack) == 0
                assert sample(text, "chat_bridge_visible_edits_total", **slack) > 0
                assert sample(text, "chat_bridge_llm_tokens_total", **slack, kind="prompt") > 0
                assert sample(text, "chat_bridge_llm_tokens_total", **slack, kind="completion") > 0
                assert sample(text, "chat_bridge_llm_first_token_seconds_count", **slack) == 1
                first_token = sample(text, "chat_bridge_llm_first_token_seconds_sum", **slack)
                total = sample(text, "chat_bridge_reply_seconds_sum", **slack)
                assert 0 < first_token < total
                assert sample(text, "chat_bridge_reply_seconds_count", **slack) == 1
                inf = sample(text, "chat_bridge_reply_seconds_bucket", **slack, le="+Inf")
                assert inf == 1
                assert sample(text, "chat_bridge_platform_connected", **slack) == 1
                assert sample(text, "chat_bridge_rate_limited_total", **slack) == 0
                assert "# TYPE chat_bridge_llm_first_token_seconds histogram" in text

                bridge.lifecycle.request_stop()
                assert await asyncio.wait_for(running, timeout=30) == 0
                with pytest.raises(aiohttp.ClientConnectorError):
                    await http.get(f"{base}/healthz")
        finally:
            if not running.done():
                bridge.lifecycle.request_stop()
                await asyncio.wait_for(running, timeout=30)
            await bridge.store.close()
            if bridge.close is not None:
                await bridge.close()


async def container_healthcheck(tmp_path: Path, port: int) -> int:
    """The Dockerfile's HEALTHCHECK command, as its own process; returns its exit status."""
    config = tmp_path / "config.toml"
    config.write_text(f'[ops]\nenabled = true\nhost = "0.0.0.0"\nport = {port}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_BRIDGE_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "adapters.ops.probe", "--config", str(config),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    return await asyncio.wait_for(process.wait(), timeout=30)


class Gate:
    """A service whose start and stop wait until the test lets them finish."""

    def __init__(self) -> None:
        self.name = "gate"
        self.may_start = asyncio.Event()
        self.may_stop = asyncio.Event()

    async def start(self) -> None:
        await self.may_start.wait()

    async def stop(self) -> None:
        await self.may_stop.wait()


class Platform:
    def __init__(self) -> None:
        self.name = "discord"
        self.connected = False


async def test_healthz_is_503_while_starting_or_stopping_and_gone_after(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    lifecycle = Lifecycle()
    platform = Platform()
    ops_settings = OpsSettings(enabled=True, host="0.0.0.0", port=port)
    ops = OpsServer(
        ops_settings,
        registry=Registry(),
        lifecycle=lifecycle,
        platforms=[platform],
    )
    gate = Gate()
    running = asyncio.create_task(lifecycle.run([ops, gate], handle_signals=False))
    try:
        async with aiohttp.ClientSession() as http:

            async def health(expected: int) -> dict[str, Any] | None:
                async with http.get(f"{base}/healthz") as response:
                    body: dict[str, Any] = await response.json()
                    return body if response.status == expected else None

            starting = await eventually(lambda: health(503))
            assert starting["status"] == "starting" and starting["services"] == ["ops"]

            healthy, detail = await probe(ops_settings)
            assert not healthy and detail.startswith("503 ")
            assert json.loads(detail.removeprefix("503 "))["status"] == "starting"

            gate.may_start.set()
            running_body = await eventually(lambda: health(200))
            assert running_body["status"] == "ok"
            assert await container_healthcheck(tmp_path, port) == 0
            assert running_body["platforms"] == {"discord": {"connected": False}}
            async with http.get(f"{base}/metrics") as response:
                assert (
                    'chat_bridge_platform_connected{platform="discord"} 0' in await response.text()
                )
            platform.connected = True
            async with http.get(f"{base}/metrics") as response:
                assert (
                    'chat_bridge_platform_connected{platform="discord"} 1' in await response.text()
                )

            lifecycle.request_stop()
            stopping = await eventually(lambda: health(503))
            assert stopping["status"] == "stopping"
            async with http.get(f"{base}/metrics") as response:
                assert response.status == 200  # a last scrape still works while stopping

            gate.may_stop.set()
            assert await asyncio.wait_for(running, timeout=10) == 0
            with pytest.raises(aiohttp.ClientConnectorError):
                await http.get(f"{base}/healthz")
            healthy, detail = await probe(ops_settings)
            assert not healthy and "ClientConnectorError" in detail
            assert await container_healthcheck(tmp_path, port) == 1
    finally:
        gate.may_start.set()
        gate.may_stop.set()
        lifecycle.request_stop()
        await asyncio.wait_for(running, timeout=10)


async def test_a_taken_port_fails_the_start_with_what_to_change() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        ops = OpsServer(
            OpsSettings(enabled=True, port=port), registry=Registry(), lifecycle=Lifecycle()
        )
        with pytest.raises(RuntimeError, match=f"ops: cannot listen on 127.0.0.1:{port}.*ops.port"):
            await ops.start()
        await ops.stop()
