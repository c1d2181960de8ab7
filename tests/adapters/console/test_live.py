"""The live page as an admin watches it: the console over real HTTP (aiohttp's test client), a
`LiveHub` fed as the responder feeds it, and its server-sent events read off the wire."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from adapters.console import ConsoleServer
from adapters.console.live import MAX_TEXT, LiveHub, LiveSection, Watcher
from bridge.console_settings import ConsoleSettings
from bridge.domain import MessageStatus
from bridge.ports import LiveReply
from bridge.redaction import Redactor
from storage import SqlChatStore
from tests.adapters.console.conftest import PASSWORD, PASSWORD_HASH, Clock, Page, csrf_of

SECRET = "sk-live-4f1d2c3b5a6e7f80SECRETTAIL"
STATIC = Path(__file__).resolve().parents[3] / "adapters" / "console" / "static"


@dataclass
class Live:
    client: TestClient  # type: ignore[type-arg]
    hub: LiveHub
    section: LiveSection
    clock: Clock

    async def login(self) -> None:
        page = await self.client.get("/login")
        response = await self.client.post(
            "/login",
            data={"password": PASSWORD, "csrf": csrf_of(await page.text())},
            allow_redirects=False,
        )
        assert response.status == 303

    async def events(self) -> aiohttp.ClientResponse:
        response = await self.client.get("/live/events")
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        # The console's headers, although its middleware comes too late for a stream.
        assert response.headers["Cache-Control"] == "no-store"
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        return response

    async def page(self, path: str) -> tuple[int, str]:
        response = await self.client.get(path, allow_redirects=False)
        return response.status, await response.text()


@pytest.fixture
async def live(store: SqlChatStore) -> AsyncIterator[Live]:
    clock = Clock()  # the sessions' clock, and the hub's
    hub = LiveHub(clock=clock, max_watchers=3)
    redact = Redactor([SECRET]).redact
    section = LiveSection(hub, redact=redact, interval=0.05, poll=0.05, heartbeat=0.2)
    settings = ConsoleSettings(enabled=True, password_hash=SecretStr(PASSWORD_HASH))
    server = ConsoleServer(
        settings, browser=store, redact=redact, sections=[section], clock=clock, sleep=clock.sleep
    )
    client = TestClient(TestServer(server.app()))
    await client.start_server()
    try:
        yield Live(client, hub, section, clock)
    finally:
        await section.close()  # as the console's stop does: open streams end first
        await client.close()


def reply(reply_id: int = 7, **changes: Any) -> LiveReply:
    values: dict[str, Any] = {
        "reply_id": reply_id,
        "chat_id": 3,
        "platform": "slack",
        "workspace": "T1",
        "channel": "C9 / 1712.5",
        "user": "U42",
        "model": "gpt-test",
        "started_at": 1_800_000_000.0 - 12,
    }
    return LiveReply(**(values | changes))


async def next_event(response: aiohttp.ClientResponse, page: Page | None = None) -> tuple[str, Any]:
    """The next event off the wire (comments and the retry line skipped), its data decoded."""
    async with asyncio.timeout(5):
        while True:
            block = (await response.content.readuntil(b"\n\n")).decode()
            if not block:
                raise EOFError("the stream ended")
            name, data = "message", []
            for line in block.splitlines():
                field, _, value = line.partition(": ")
                if field == "event":
                    name = value
                elif field == "data":
                    data.append(value)
            if data:
                decoded = json.loads("\n".join(data))
                return name, decoded if page is None else page.read(name, decoded)


async def test_a_reply_grows_on_an_open_page_then_its_failure_stands_out(live: Live) -> None:
    await live.login()
    events, page = await live.events(), Page()
    assert await next_event(events, page) == ("reset", {"now": live.clock.now, "replies": []})

    live.hub.started(reply())
    name, data = await next_event(events, page)
    assert name == "reply" and data["now"] == live.clock.now
    assert data["reply"] == {
        "id": 7,
        "chat_id": 3,
        "platform": "slack",
        "place": "T1 / C9 / 1712.5",
        "user": "U42",
        "model": "gpt-test",
        "started_at": 1_800_000_000.0 - 12,
        "ended_at": None,
        "status": "pending",
        "label": "waiting",  # until its first words show
        "error": None,
        "updates": 0,
        "rate_limited": 0,
        "text": "",
        "cut": 0,
    }

    # Two writes before the page's next send: it gets the newest text once.
    live.hub.shown(7, "Hello", updates=1, rate_limited=0)
    live.hub.shown(7, "Hello, world", updates=2, rate_limited=1)
    name, data = await next_event(events, page)
    assert name == "reply"
    grown = data["reply"]
    assert (grown["text"], grown["updates"], grown["rate_limited"]) == ("Hello, world", 2, 1)
    assert (grown["status"], grown["label"]) == ("streaming", "streaming")

    live.clock.now += 3
    live.hub.ended(7, MessageStatus.FAILED, "the model failed: 500 upstream")
    name, data = await next_event(events, page)
    assert name == "reply"
    ended = data["reply"]
    assert (ended["status"], ended["label"]) == ("failed", "failed")
    assert ended["error"] == "the model failed: 500 upstream"
    assert ended["ended_at"] == live.clock.now and ended["text"] == "Hello, world"

    # The page shows it too, rendered at once, marked as failed with its error.
    status, html = await live.page("/live")
    assert status == 200
    assert 'class="live-reply status-failed ended"' in html
    assert 'href="/conversations/3"' in html and "T1 / C9 / 1712.5" in html
    assert "the model failed: 500 upstream" in html and "Hello, world" in html
    assert ">15 s<" in html  # elapsed: from its start to its end
    assert "0 streaming now · 1 ended recently" in html


async def test_a_reply_is_sent_a_few_times_a_second_at_most(live: Live) -> None:
    await live.login()
    events, page = await live.events(), Page()
    await next_event(events, page)  # the reset
    live.hub.started(reply())
    await next_event(events, page)
    began = time.monotonic()
    for n in range(1, 61):  # a write every 10 ms for 0.6 s
        live.hub.shown(7, "word " * n, updates=n, rate_limited=0)
        await asyncio.sleep(0.01)
    spent = time.monotonic() - began
    live.hub.ended(7, MessageStatus.COMPLETE, None)
    sent = []
    while True:
        _, data = await next_event(events, page)
        sent.append(data["reply"])
        if data["reply"]["status"] == "complete":
            break
    # One send per interval (0.05 s) at most, each with the newest text: 60 writes, few sends.
    assert len(sent) <= spent / 0.05 + 2, len(sent)
    assert len(sent) < 60  # fewer sends than writes
    assert [s["updates"] for s in sent] == sorted(s["updates"] for s in sent)
    assert sent[-1]["text"] == "word " * 60 and sent[-1]["label"] == "answered"


async def test_a_growing_reply_is_sent_as_what_it_appended(live: Live) -> None:
    """Each change of a text that only grew is sent as its new characters: the page's text is
    the reply's end as the server keeps it, through a window that moves on past MAX_TEXT."""
    await live.login()
    events, page = await live.events(), Page()
    await next_event(events, page)
    live.hub.started(reply())
    await next_event(events, page)
    text, raw_text_bytes, raw_bytes = "", 0, 0
    for n in range(1, 41):
        text += f"sentence {n} of a reply that goes on for a while. " * 5
        live.hub.shown(7, text, updates=n, rate_limited=0)
        block = await events.content.readuntil(b"\n\n")
        raw_bytes += len(block)
        name, data = json_event(block)
        sent = page.read(name, data)["reply"]
        raw_text_bytes += len(text[-MAX_TEXT:])
        assert sent["text"] == text[-MAX_TEXT:] and sent["cut"] == max(0, len(text) - MAX_TEXT)
        assert "append" in data["reply"], n  # never the whole text again
    assert len(text) > 2 * MAX_TEXT
    assert raw_bytes < raw_text_bytes / 4  # each character about once, not on every change


async def test_a_change_before_the_end_sends_the_whole_text(live: Live) -> None:
    """A secret completed by the last words turns earlier characters into [redacted]: that is
    not an append, so the whole (redacted) end is sent."""
    await live.login()
    events, page = await live.events(), Page()
    await next_event(events, page)
    live.hub.started(reply())
    half = SECRET[: len(SECRET) // 2]
    live.hub.shown(7, f"the key is {half}", updates=1, rate_limited=0)
    _, data = await next_event(events, page)
    live.hub.shown(7, f"the key is {SECRET} and more", updates=2, rate_limited=0)
    _, data = await next_event(events, page)
    assert data["reply"]["text"] == "the key is [redacted] and more"
    raw = json.dumps(data)
    assert SECRET not in raw


async def test_two_pages_at_different_versions_each_get_what_they_miss(live: Live) -> None:
    hub, section = live.hub, live.section
    slow, fast = hub.watch(), hub.watch()
    assert slow is not None and fast is not None
    pages = {slow: Page(), fast: Page()}

    def send(watcher: Watcher) -> None:
        sent_to(pages[watcher], section, watcher)

    hub.started(reply())
    send(slow)
    send(fast)
    for words in ("One", "One two", "One two three", "One two three four"):
        hub.shown(7, words, updates=1, rate_limited=0)
        send(fast)
    send(slow)  # it missed three versions: one append brings it level
    assert pages[slow].texts[7] == pages[fast].texts[7] == (0, "One two three four")
    hub.unwatch(slow)
    hub.unwatch(fast)


def sent_to(page: Page, section: LiveSection, watcher: Watcher) -> None:
    """What the watcher's stream would send now, read by its page."""
    reset, changed = watcher.take()
    for block in section._encode(reset, changed, watcher.sent).split(b"\n\n"):
        if block:
            page.read(*json_event(block + b"\n\n"))


def json_event(block: bytes) -> tuple[str, Any]:
    name, data = "message", ""
    for line in block.decode().splitlines():
        field, _, value = line.partition(": ")
        if field == "event":
            name = value
        elif field == "data":
            data = value
    return name, json.loads(data)


async def test_without_a_session_the_page_and_its_events_go_to_the_login(live: Live) -> None:
    for path in ("/live", "/live/events"):
        response = await live.client.get(path, allow_redirects=False)
        assert response.status == 303 and response.headers["Location"] == "/login"
    assert live.hub.watchers == 0


async def test_a_page_that_reads_nothing_holds_one_pending_entry_per_reply(live: Live) -> None:
    await live.login()
    events = await live.events()  # opened, then not read while the replies stream
    for reply_id in (1, 2, 3):
        live.hub.started(reply(reply_id))
    big = "x" * 3000
    for n in range(3000):
        live.hub.shown(1 + n % 3, f"{big}{n}", updates=n, rate_limited=0)
        if n % 100 == 0:
            await asyncio.sleep(0)  # the stream runs, and blocks on a full socket if it must
        assert live.hub.backlog <= 3
    newest = {1: f"{big}2997", 2: f"{big}2998", 3: f"{big}2999"}
    last: dict[int, str] = {}
    while last != newest:  # what it reads now ends with each reply's newest text
        name, data = await next_event(events)
        for one in data["replies"] if name == "reset" else [data["reply"]]:
            last[one["id"]] = one["text"]


async def test_a_watcher_that_falls_far_behind_is_sent_everything_afresh() -> None:
    hub = LiveHub(max_replies=10, keep_ended=5)
    watcher = hub.watch()
    assert watcher is not None
    assert watcher.take() == (True, [])  # its first send: everything
    for reply_id in range(100):
        hub.started(reply(reply_id))
        hub.shown(reply_id, "some text", updates=1, rate_limited=0)
        hub.ended(reply_id, MessageStatus.COMPLETE, None)
        assert watcher.backlog <= 15
    reset, changed = watcher.take()
    assert reset and changed == []
    assert [entry.reply.reply_id for entry in hub.replies()] == [99, 98, 97, 96, 95]


async def test_html_in_a_reply_arrives_as_inert_text(live: Live) -> None:
    await live.login()
    live.hub.started(reply(user="<b>U1</b>"))
    text = "<script>alert(1)</script> & <img src=x onerror=alert(2)>"
    live.hub.shown(7, text, updates=1, rate_limited=0)
    live.hub.ended(7, MessageStatus.FAILED, "<i>oops</i>")
    events = await live.events()
    raw = (await events.content.readuntil(b"\n\n")) + (await events.content.readuntil(b"\n\n"))
    assert b"<" not in raw and b">" not in raw and b"&" not in raw
    [sent] = json.loads(raw.decode().split("data: ", 1)[1])["replies"]
    assert (sent["text"], sent["user"], sent["error"]) == (text, "<b>U1</b>", "<i>oops</i>")

    _, html = await live.page("/live")
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "<i>oops" not in html and "&lt;b&gt;U1" in html


async def test_secrets_never_reach_the_page_or_its_events(live: Live) -> None:
    await live.login()
    live.hub.started(reply(model=f"model-{SECRET}"))
    live.hub.shown(7, f"the key is {SECRET}", updates=1, rate_limited=0)
    events, page = await live.events(), Page()
    _, data = await next_event(events, page)
    assert data["replies"][0]["text"] == "the key is [redacted]"
    # A secret the text's cut (its last MAX_TEXT characters) falls into is still redacted.
    cut_through = "x" * 9000 + SECRET + "y" * (MAX_TEXT - 5)
    live.hub.shown(7, cut_through, updates=2, rate_limited=0)
    live.hub.ended(7, MessageStatus.FAILED, f"401: Incorrect API key provided: {SECRET}")
    _, data = await next_event(events, page)
    sent = data["reply"]
    assert len(sent["text"]) == MAX_TEXT and sent["text"].endswith("y" * (MAX_TEXT - 5))
    assert "TAIL" not in sent["text"] and sent["cut"] > 9000
    assert sent["error"] == "401: Incorrect API key provided: [redacted]"
    assert sent["model"] == "model-[redacted]"
    _, html = await live.page("/live")
    assert "[redacted]" in html
    for shown in (html, json.dumps(data)):
        assert SECRET not in shown and "SECRETTAIL" not in shown


async def test_closing_ends_open_streams_at_once(live: Live) -> None:
    await live.login()
    events = await live.events()
    await next_event(events)
    began = time.monotonic()
    await live.section.close()
    async with asyncio.timeout(2):
        assert await events.content.read() == b""  # the stream ended
    assert time.monotonic() - began < 1.0
    assert live.hub.watchers == 0
    response = await live.client.get("/live/events")
    assert response.status == 503  # no new stream while the console stops


async def test_a_stream_ends_with_its_session(live: Live) -> None:
    await live.login()
    events = await live.events()
    await next_event(events)
    live.clock.now += 12 * 3600  # the session's lifetime
    async with asyncio.timeout(2):
        assert await events.content.read() == b""
    response = await live.client.get("/live/events", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/login"


async def test_a_logout_in_another_tab_ends_the_open_stream(live: Live) -> None:
    await live.login()
    events = await live.events()
    await next_event(events)
    status, page = await live.page("/live")  # another tab of the same browser: its form
    assert status == 200
    response = await live.client.post(
        "/logout", data={"csrf": csrf_of(page)}, allow_redirects=False
    )
    assert response.status == 303
    async with asyncio.timeout(2):
        assert await events.content.read() == b""  # the stream ended with the session
    assert live.hub.watchers == 0


async def test_a_page_that_leaves_frees_its_stream(live: Live) -> None:
    await live.login()
    pages = [await live.events() for _ in range(3)]
    assert live.hub.watchers == 3
    assert (await live.client.get("/live/events")).status == 503  # at most 3 here
    pages[0].close()
    for _ in range(150):  # it notices within its poll (0.05 s here)
        if live.hub.watchers == 2:
            break
        await asyncio.sleep(0.02)
    assert live.hub.watchers == 2
    again = await live.events()
    assert (await next_event(again))[0] == "reset"


async def test_ended_replies_stay_a_few_minutes_then_go(live: Live) -> None:
    await live.login()
    live.hub.started(reply(1))
    live.hub.ended(1, MessageStatus.STOPPED, "cut: stopped by U42")
    events = await live.events()
    _, data = await next_event(events)
    assert [r["label"] for r in data["replies"]] == ["stopped"]
    live.hub.started(reply(2))
    assert (await next_event(events))[1]["reply"]["id"] == 2
    live.clock.now += 301  # nothing else happens: the quiet stream still drops it
    assert await next_event(events) == ("gone", {"id": 1})
    _, html = await live.page("/live")
    assert 'id="reply-2"' in html and 'id="reply-1"' not in html
    # Fifty ended replies are kept at most.
    for reply_id in range(100, 160):
        live.hub.started(reply(reply_id))
        live.hub.ended(reply_id, MessageStatus.COMPLETE, None)
    kept = [entry.reply.reply_id for entry in live.hub.replies()]
    assert kept == [*range(159, 109, -1), 2]


async def test_a_quiet_stream_sends_heartbeats(live: Live) -> None:
    await live.login()
    events = await live.events()
    await next_event(events)
    async with asyncio.timeout(2):
        assert await events.content.readuntil(b"\n\n") == b": keep-alive\n\n"


async def test_the_page_runs_no_inline_code_and_loads_its_own_files(live: Live) -> None:
    await live.login()
    status, html = await live.page("/live")
    assert status == 200
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts == ['<script src="/static/live.js" defer>']
    assert "</script>" in html and not re.search(r"<script[^>]*>[^<]", html)
    assert not re.search(r"\son[a-z]+\s*=", html) and " style=" not in html
    assert '<link rel="stylesheet" href="/static/live.css">' in html
    assert '<a href="/live" aria-current="page">Live</a>' in html
    for path in ("/static/live.js", "/static/live.css"):
        assert (await live.client.get(path)).status == 200, path
    script = (STATIC / "live.js").read_text()
    # Reply text is only ever set as text, never parsed as markup or code.
    for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert unsafe not in script
    assert "text.textContent = shown" in script


async def test_a_reply_started_again_under_its_id_is_sent_whole(live: Live) -> None:
    """Answered again in this process (crash recovery): its versions never repeat one a page
    holds of the first answer, so a page gets the new text whole, not appended to the old."""
    hub, section = live.hub, live.section
    slow, fast = hub.watch(), hub.watch()
    assert slow is not None and fast is not None
    pages = {slow: Page(), fast: Page()}

    def send(watcher: Watcher) -> None:
        sent_to(pages[watcher], section, watcher)

    hub.started(reply())
    hub.shown(7, "The first answer", updates=1, rate_limited=0)
    send(slow)
    send(fast)
    hub.started(reply())  # the same reply id, begun again
    hub.shown(7, "The FIRST ANSWER", updates=1, rate_limited=0)  # as long as the old one
    send(fast)
    hub.shown(7, "The FIRST ANSWER, again", updates=2, rate_limited=0)
    send(slow)  # it still holds the first answer
    send(fast)
    assert pages[slow].texts[7] == pages[fast].texts[7] == (0, "The FIRST ANSWER, again")
    hub.unwatch(slow)
    hub.unwatch(fast)
