"""The sandbox's admin console: its address and password in the banner, a login over real HTTP,
the Live page's events growing with a sandbox reply as it streams, and the stored conversations."""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp

from sandbox.answers import STORY
from sandbox.console import pick_port
from sandbox.display import LogDisplay
from sandbox.runner import perform
from sandbox.session import Sandbox, SandboxOptions
from tests.adapters.console.conftest import Page

BANNER = re.compile(r"console  admin console at (http://127\.0\.0\.1:\d+/) \(password: (\S+)\)")
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
WAIT = 60.0  # seconds: generous, the machine may be busy


@dataclass
class LiveEvents:
    """What `/live/events` sent: each reply's states in the order they came."""

    states: dict[int, list[dict[str, object]]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    page: Page = field(default_factory=Page)  # appends made whole texts, as live.js does

    def add(self, event: str, data: dict[str, object]) -> None:
        data = self.page.read(event, data)
        if event == "reset":
            replies = data["replies"]
            assert isinstance(replies, list)
            for reply in replies:
                self.states.setdefault(reply["id"], []).append(reply)
        elif event == "reply":
            reply = data["reply"]
            assert isinstance(reply, dict)
            self.states.setdefault(reply["id"], []).append(reply)
        self.changed.set()

    def story(self) -> list[dict[str, object]]:
        """The states of the reply that told STORY (found by its text)."""
        for states in self.states.values():
            if any(STORY.endswith(str(s["text"])) and len(str(s["text"])) > 200 for s in states):
                return states
        return []


async def read_events(response: aiohttp.ClientResponse, into: LiveEvents) -> None:
    """Server-sent events: `event:` and `data:` lines, a blank line ends each one."""
    event, data = "message", ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if data:
                into.add(event, json.loads(data))
            event, data = "message", ""
        elif line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data += line.removeprefix("data: ")


async def shown(
    out: io.StringIO, pattern: re.Pattern[str], running: asyncio.Task[int]
) -> re.Match[str]:
    async with asyncio.timeout(WAIT):
        while (match := pattern.search(out.getvalue())) is None:
            assert not running.done(), out.getvalue()
            await asyncio.sleep(0.05)
    return match


async def log_in(http: aiohttp.ClientSession, password: str) -> None:
    page = await http.get("/login")
    match = CSRF.search(await page.text())
    assert match is not None
    answer = await http.post(
        "/login", data={"password": password, "csrf": match.group(1)}, allow_redirects=False
    )
    assert (answer.status, answer.headers["Location"]) == (303, "/conversations")


async def test_the_console_shows_the_sandboxs_replies_live_and_its_conversations() -> None:
    out = io.StringIO()
    options = SandboxOptions(speed=20, interactive=True, console_port=0)
    sandbox = Sandbox(options, LogDisplay(out, placeholder="…"))
    typed: asyncio.Queue[str] = asyncio.Queue()

    async def lines() -> AsyncIterator[str]:
        while True:
            yield await typed.get()

    running = asyncio.ensure_future(perform(sandbox, lines=lines()))
    try:
        url, password = (await shown(out, BANNER, running)).groups()
        assert "open until you quit" in out.getvalue()
        await shown(out, re.compile(r"bridge up after .*console"), running)
        # The cookies are the console's, on 127.0.0.1: a jar that keeps cookies of an IP address.
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(base_url=url, cookie_jar=jar) as http:
            refused = await http.get("/live", allow_redirects=False)
            assert refused.status == 303  # not without the password
            await log_in(http, password)

            stream = await http.get("/live/events")
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            events = LiveEvents()
            reading = asyncio.ensure_future(read_events(stream, events))
            # Read once the script is over: a reply long enough to stream for a while.
            typed.put_nowait("slack: Tell me a long story, please.\n")
            async with asyncio.timeout(WAIT):
                while not any(s["status"] == "complete" for s in events.story()):
                    assert not reading.done() and not running.done(), out.getvalue()
                    await events.changed.wait()
                    events.changed.clear()
            reading.cancel()
            stream.close()

            story = events.story()
            # Its text grew on the page while it streamed (at 1,000 tokens/s, some 1.4 s: its
            # first words, usually one update a second later), each state longer, the last one
            # the whole story (the page keeps the text's end; `cut` counts the rest).
            lengths = [int(str(s["cut"])) + len(str(s["text"])) for s in story]
            streaming = [
                n for s, n in zip(story, lengths, strict=True) if s["status"] == "streaming"
            ]
            assert streaming and 0 < streaming[0] and streaming[-1] < len(STORY), lengths
            assert lengths == sorted(lengths)
            assert lengths[-1] == len(STORY) and story[-1]["status"] == "complete"
            assert story[-1]["platform"] == "slack"

            conversations = await http.get("/conversations", allow_redirects=False)
            page = await conversations.text()
            assert conversations.status == 200
            # The script's threads and DMs on both platforms, and the typed one.
            assert page.count("<td>slack</td>") == 3 and page.count("<td>discord</td>") == 2
            assert "What chat-bridge does" in page and "Naming the team bot" in page
    finally:
        typed.put_nowait("quit\n")
        try:
            async with asyncio.timeout(WAIT):
                code = await running
        except TimeoutError:
            sandbox.interrupt.set()
            raise
    assert code == 0


def test_the_console_takes_its_port_when_free_and_another_when_it_is_taken() -> None:
    free = pick_port(0)
    assert pick_port(free) == free
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        other = pick_port(taken)
        assert other != taken and other > 0
