"""One sandbox session: the local Slack, Discord and LLM, and the real bridge running against them.

`Sandbox` starts the emulators, builds the bridge with `bridge.app.build`, runs it under its own
lifecycle, plays the script on both platforms and reports what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bridge import app
from bridge.config import Settings, load_settings
from sandbox.answers import SandboxModel
from sandbox.console import DEFAULT_PORT, SandboxConsole, new_password, pick_port
from sandbox.discord_stage import DiscordStage
from sandbox.display import Display
from sandbox.exchange import Exchange, Stage
from sandbox.llm_server import LLMServer
from sandbox.script import conversation, play
from sandbox.slack_stage import SlackStage
from sandbox.summary import PlatformReport, Totals, render
from sandbox.tracker import Tracker

T = TypeVar("T")

TOKENS_PER_SECOND = 50.0  # a brisk hosted model; slow enough to watch the reply grow
FIRST_TOKEN_DELAY = 0.4  # the model "thinks" first, so the typing indicator shows alone
READING_PAUSE = 0.8  # alice reads the reply before her next message
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
# A Python process importing the MCP SDK starts in a second or two; a loaded machine takes longer.
TOOLS_TIMEOUT = 30.0
SANDBOX_TOOLS = {
    "name": "sandbox",
    "command": sys.executable,
    "args": ["-m", "sandbox.mcp_server"],
    "timeout": 10.0,
}


@dataclass(frozen=True, slots=True)
class SandboxOptions:
    interactive: bool = False
    speed: float = 1.0  # multiplies the local model's pace and divides the pauses
    llm_base_url: str | None = None  # a real OpenAI-compatible endpoint instead of the local one
    llm_api_key: str | None = None
    model: str | None = None
    reply_timeout: float | None = None
    console_port: int = DEFAULT_PORT  # the admin console's, if free (0: any free port)

    @property
    def timeout(self) -> float:
        if self.reply_timeout is not None:
            return self.reply_timeout
        # The longest scripted reply takes about nine seconds at speed 1; a real model, longer.
        return 30.0 + 30.0 / self.speed if self.llm_base_url is None else 120.0


class SandboxError(Exception):
    """The sandbox could not do what it set out to; the message says what."""


class Interrupted(Exception):
    """Ctrl-C."""


class _Ready:
    """The last service the lifecycle starts: once it runs, every service before it does."""

    name = "sandbox"

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def start(self) -> None:
        self.started.set()

    async def stop(self) -> None:
        return None


class Sandbox:
    def __init__(self, options: SandboxOptions, display: Display) -> None:
        self.options = options
        self.display = display
        self.slack = SlackStage()
        self.discord = DiscordStage()
        self.llm: LLMServer | None = None
        self.bridge: app.Bridge | None = None
        self.console: SandboxConsole | None = None
        self._tracker: Tracker | None = None
        self._running: asyncio.Task[int] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self.interrupt = asyncio.Event()
        self.started_at = time.monotonic()
        self.startup = 0.0

    @property
    def stages(self) -> tuple[Stage, ...]:
        return (self.slack, self.discord)

    def stage(self, name: str) -> Stage:
        return self.slack if name == "slack" else self.discord

    @property
    def tracker(self) -> Tracker:
        if self._tracker is None:
            raise RuntimeError("the sandbox is not started")
        return self._tracker

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.started_at = time.monotonic()
        (password, password_hash), _ = await asyncio.gather(new_password(), self._start_stages())
        llm = await self._llm_settings()
        # Picked once every emulator listens, so that none of them takes the port meanwhile.
        self.console = SandboxConsole(pick_port(self.options.console_port), password, password_hash)
        self._workdir = tempfile.TemporaryDirectory(prefix="chat-bridge-sandbox-")
        sections: dict[str, Any] = {
            "storage": {"url": f"sqlite+aiosqlite:///{Path(self._workdir.name) / 'bridge.db'}"},
            "llm": llm,
            "slack": self.slack.bridge_settings(),
            "discord": self.discord.bridge_settings(),
            # The bundled MCP server (the time, a calculator, the docs), started by the bridge.
            "mcp": {"servers": [SANDBOX_TOOLS]},
            "console": self.console.settings(),
        }
        # Settings from the sandbox alone: no CHAT_BRIDGE_* variables, no TOML file.
        settings = load_settings(None, environ={}, values=sections)
        self.display.write_lines(self._intro(settings))
        try:
            self.bridge = await app.build(settings)
        except Exception as exc:
            raise SandboxError(f"the bridge could not be built: {exc}") from exc
        self._tracker = Tracker(
            self.bridge.store, self.display, placeholder=settings.streaming.placeholder
        )
        for stage in self.stages:
            self._tracker.watch(stage)
        ready = _Ready()
        services = [*self.bridge.services, ready]
        self._running = asyncio.get_running_loop().create_task(
            self.bridge.lifecycle.run(services, handle_signals=False)
        )
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await self.guard(ready.started.wait())
        except TimeoutError:
            raise SandboxError(f"the bridge did not start within {START_TIMEOUT:g} s") from None
        await self._tracker.start()
        await self._tools_up()
        self.startup = time.monotonic() - self.started_at
        names = ", ".join(service.name for service in self.bridge.services)
        self.display.note(f"bridge up after {self.startup:.1f} s: {names}")

    async def _start_stages(self) -> None:
        for stage in self.stages:
            await stage.start()

    async def _tools_up(self) -> None:
        """Wait for the bundled MCP server, so that the script's tool question gets its tools;
        without them the bridge still answers (and the sandbox says so)."""
        assert self.bridge is not None
        tools = self.bridge.responder.tools
        box = tools.toolbox if tools is not None else None
        if box is None:
            return
        deadline = time.monotonic() + TOOLS_TIMEOUT
        while not box.available(["*"]) and time.monotonic() < deadline:
            await self.guard(asyncio.sleep(0.1))
        if not box.available(["*"]):
            self.display.note(f"the sandbox's MCP server is not up after {TOOLS_TIMEOUT:g} s")

    async def _llm_settings(self) -> dict[str, Any]:
        options = self.options
        if options.llm_base_url is not None:
            values: dict[str, Any] = {"base_url": options.llm_base_url}
            if options.llm_api_key:
                values["api_key"] = options.llm_api_key
            if options.model:
                values["model"] = options.model
            return values
        self.llm = LLMServer(
            default_tokens_per_second=TOKENS_PER_SECOND * options.speed, record_requests=False
        )
        self.llm.responder = SandboxModel(first_token_delay=FIRST_TOKEN_DELAY / options.speed)
        await self.llm.start()
        return {
            "base_url": self.llm.base_url,
            "api_key": "sandbox-local-key",
            "model": options.model or "sandbox-scripted",
        }

    async def stop(self) -> None:
        if self._tracker is not None:
            await self._tracker.stop()
        if self.bridge is not None:
            if self._running is not None:
                self.bridge.lifecycle.request_stop()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._running, STOP_TIMEOUT)
            await self.bridge.store.close()
            if self.bridge.close is not None:
                await self.bridge.close()
        if self.llm is not None:
            await self.llm.stop()
        for stage in reversed(self.stages):
            await stage.stop()
        if self._workdir is not None:
            self._workdir.cleanup()

    async def guard(self, work: Awaitable[T]) -> T:
        """Await `work` unless the bridge stops or Ctrl-C comes first."""
        task = asyncio.ensure_future(work)
        interrupted = asyncio.ensure_future(self.interrupt.wait())
        watched: set[asyncio.Future[Any]] = {task, interrupted}
        if self._running is not None:
            watched.add(self._running)
        try:
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            interrupted.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.done() and not task.cancelled():
            return task.result()
        if self.interrupt.is_set():
            raise Interrupted
        failure = self.bridge.lifecycle.failure if self.bridge is not None else None
        raise SandboxError(f"the bridge stopped: {failure or 'no reason given'}")

    # --- the show ----------------------------------------------------------------------------

    async def play(self) -> list[Exchange]:
        """Both platforms' scripts at once; the first failure stops the other."""
        pause = READING_PAUSE / self.options.speed
        plays = [
            asyncio.ensure_future(
                play(
                    self.tracker,
                    stage,
                    conversation(stage.name),
                    pause=pause,
                    timeout=self.options.timeout,
                    speed=self.options.speed if self.options.llm_base_url is None else 1.0,
                )
            )
            for stage in self.stages
        ]
        try:
            results = await asyncio.gather(*plays)
        finally:
            for task in plays:
                task.cancel()
            await asyncio.gather(*plays, return_exceptions=True)
        return [exchange for played in results for exchange in played]

    def report(self) -> list[str]:
        assert self.bridge is not None
        exchanges = self.tracker.exchanges
        platforms = []
        for stage in self.stages:
            own = tuple(e for e in exchanges if e.platform == stage.name)
            labels = {exchange: stage.label(exchange) for exchange in own}
            platforms.append(PlatformReport(stage.name, own, stage.counts(), labels))
        totals = Totals(
            wall_time=time.monotonic() - self.started_at,
            startup=self.startup,
            db_rows_written=self.bridge.store.writes,
            storage="SQLite",
        )
        return render(platforms, totals)

    def _intro(self, settings: Settings) -> list[str]:
        if self.llm is not None:
            pace = TOKENS_PER_SECOND * self.options.speed
            model = f"local scripted model at {self.llm.base_url}, {pace:g} tokens/s"
        else:
            model = f"{settings.llm.model} at {settings.llm.base_url}"
        where = "local Slack, Discord and LLM" if self.llm else "local Slack and Discord"
        return [
            f"chat-bridge sandbox: the real bridge against {where} emulators",
            f"  slack    emulator at {self.slack.emu.api_base_url} (Socket Mode, Slack's tiers)",
            f"  discord  emulator at {self.discord.emu.api_base_url} (auto_thread on)",
            f"  llm      {model}",
            "  tools    bundled MCP server `sandbox` over stdio (now, calculate, search_docs)",
            f"  storage  {settings.storage.url.split(':///', 1)[-1]} (deleted on exit)",
            *(self.console.banner(interactive=self.options.interactive) if self.console else []),
        ]
