"""The admin console in a real browser: Debian's Chromium driven by Playwright, against a whole
bridge (real discord.py against the Discord emulator, openai against the local LLM server) with
the console on. Playwright's own browser download cannot work on these machines: the tests use
the system's Chromium (`apt-get install chromium`; `.ci/run` installs it) and skip, saying so,
without it.

Every test saves a screenshot of the pages it visits into the directory named by
`CHAT_BRIDGE_SCREENSHOTS` (docs/console/ when refreshing the docs' pictures), else into its own
temporary directory.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.console import hash_password
from bridge.app import Bridge
from sandbox.discord_emulator import DiscordEmulator
from sandbox.llm_server import LLMServer
from tests.integration.whole_bridge import base_config, whole_bridge

CHROMIUM = os.environ.get("CHAT_BRIDGE_CHROMIUM", "/usr/bin/chromium")
# As the machines' probe starts it: without the background-networking flags Chromium keeps
# calling out, and this network refuses it.
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
PASSWORD = "correct horse battery staple"
PASSWORD_HASH = hash_password(PASSWORD)
TOKEN = "discord-test-token"
SECRETS = {"CHAT_BRIDGE_DISCORD__TOKEN": TOKEN}

try:
    from playwright.async_api import Browser, Page, async_playwright
except ImportError:  # pragma: no cover - the dev extras install it
    async_playwright = None  # type: ignore[assignment]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def missing() -> str | None:
    """Why the browser tests cannot run here, if they cannot."""
    if async_playwright is None:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("CHAT_BRIDGE_SCREENSHOTS") or tmp_path / "screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


@dataclass
class Community:
    emu: DiscordEmulator
    llm: LLMServer
    guild: int
    support: int  # a text channel
    general: int
    alice: int
    bob: int

    def replies(self, channel: int) -> list[str]:
        return [
            m.content for m in self.emu.messages(channel) if m.author_id == self.emu.bot_user_id
        ]


@pytest.fixture
async def community() -> AsyncIterator[Community]:
    async with (
        DiscordEmulator(token=TOKEN, bot_name="bridge-bot") as emu,
        LLMServer(tick=0.01) as llm,
    ):
        guild = emu.add_guild("Community")
        support = emu.add_text_channel(guild, "support")
        general = emu.add_text_channel(guild, "general")
        alice, bob = emu.add_user("alice"), emu.add_user("bob")
        yield Community(emu, llm, guild, support, general, alice, bob)


@dataclass
class Console:
    bridge: Bridge
    url: str
    community: Community


@asynccontextmanager
async def console_bridge(
    tmp_path: Path, community: Community, *, session_hours: float = 12.0, more: str = ""
) -> AsyncIterator[Console]:
    """A whole bridge on Discord with the console on a free port."""
    port = free_port()
    path = tmp_path / "config.toml"
    path.write_text(
        base_config(tmp_path / "bridge.db", community.llm.base_url)
        + "[discord]\nenabled = true\n"
        + f'api_base_url = "{community.emu.api_base_url}"\n'
        + f'gateway_url = "{community.emu.gateway_url}"\n'
        + f"command_guilds = [{community.guild}]\nguild_ready_timeout = 0.5\n"
        + f'[console]\nenabled = true\nport = {port}\npassword_hash = "{PASSWORD_HASH}"\n'
        + f"session_hours = {session_hours}\n"
        + more
    )
    async with whole_bridge(path, SECRETS) as bridge:
        yield Console(bridge, f"http://127.0.0.1:{port}", community)


async def log_in(page: Page, url: str, password: str = PASSWORD) -> None:
    await page.goto(f"{url}/login")
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")


def errors_of(page: Page) -> list[str]:
    """Console errors and CSP violations the page reports (collected from now on)."""
    seen: list[str] = []

    def on_console(message: Any) -> None:
        if message.type == "error" and "Failed to load resource" not in message.text:
            seen.append(message.text)

    def on_response(response: Any) -> None:
        if response.status >= 400:
            seen.append(f"{response.status} {response.url}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: seen.append(str(error)))
    page.on("response", on_response)
    return seen
