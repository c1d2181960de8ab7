"""The console's live page: the replies streaming now, each growing as it streams on its platform.

`LiveHub` is the `ReplyFeed` the responder tells about every reply of this process (in memory,
never read back from the store); `LiveSection` serves the page and its server-sent events. Each
open page has its own stream, which keeps only the ids of the replies that changed and sends each
one's newest state at most a few times a second: a slow browser gets the latest text, never a
backlog, and no watcher ever holds up a reply.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from aiohttp import web

from adapters.console.section import SESSION_ACTIVE, Render
from adapters.console.server import HEADERS
from bridge.domain import MessageStatus
from bridge.ports import LiveReply

MAX_TEXT = 4000  # the characters of a reply's text sent (its end)
# Kept before those, so that a secret the cut falls into is still redacted whole.
REDACT_MARGIN = 1000
# The versions of each reply whose shown text is kept to send a stream only what it appended.
KEPT_VERSIONS = 4
KEEP_ENDED = 50  # ended replies kept on the page...
ENDED_FOR = 300.0  # ...for this many seconds at most
MAX_REPLIES = 500  # replies streaming at once beyond this are left off the page
MAX_WATCHERS = 20  # open live pages (streams) at once
INTERVAL = 0.3  # seconds: a stream sends a reply's changes at most this often
HEARTBEAT = 15.0  # seconds of silence before a comment line keeps proxies from closing a stream
POLL = 1.0  # seconds between looks at whether a silent stream's browser is still there
RETRY_MS = 3000  # how soon a browser reconnects a stream that broke

LABELS = {
    MessageStatus.PENDING: "waiting",
    MessageStatus.STREAMING: "streaming",
    MessageStatus.COMPLETE: "answered",
    MessageStatus.FAILED: "failed",
    MessageStatus.STOPPED: "stopped",
    MessageStatus.INTERRUPTED: "interrupted",
}


@dataclass(slots=True, eq=False)
class LiveEntry:
    """One reply as the hub knows it: the end of its text and its counts, as last told."""

    reply: LiveReply
    text: str = ""
    cut: int = 0  # characters before `text` that are not kept
    updates: int = 0
    rate_limited: int = 0
    # PENDING ("waiting") until its first words show: queued behind the chat's previous reply,
    # waiting for an LLM slot or for the model's first token.
    status: MessageStatus = MessageStatus.PENDING
    error: str | None = None
    ended_at: float | None = None
    # Counts changes, across the hub (a reply started again under its id never repeats a
    # version a page holds): a stream encodes each version of a reply once.
    version: int = 0
    encoded: tuple[int, str] | None = None  # (version, its event data), made by LiveSection
    shown: tuple[str, str, str, str] | None = None  # platform, place, user, model: redacted
    # The text the latest versions showed, redacted: version -> (cut, text); and the event data
    # of the newest change as an append, (from version, to version, data): most streams last
    # got the same version, so one encoding serves them all.
    texts: dict[int, tuple[int, str]] = field(default_factory=dict)
    appended: tuple[int, int, str] | None = None
    view: tuple[int, ReplyView] | None = None  # (version, the view made for it)


class Watcher:
    """One stream's view of the hub: which replies changed since it last sent (ids only, oldest
    change first), or `reset` when it must send everything (its first send, or after more
    changes than `limit` piled up unsent)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._changed: dict[int, None] = {}
        self.sent: dict[int, int] = {}  # reply id -> the version the page was last sent
        self.reset = True
        self.wake = asyncio.Event()
        self.wake.set()
        self.closed = asyncio.Event()

    def touch(self, reply_id: int) -> None:
        if not self.reset:
            self._changed[reply_id] = None
            if len(self._changed) > self._limit:
                self._changed.clear()
                self.reset = True
        self.wake.set()

    @property
    def backlog(self) -> int:
        return len(self._changed)

    def take(self) -> tuple[bool, list[int]]:
        reset, changed = self.reset, list(self._changed)
        self.reset = False
        self._changed.clear()
        self.wake.clear()
        return reset, changed

    def close(self) -> None:
        self.closed.set()
        self.wake.set()


class LiveHub:
    """A `ReplyFeed`: this process's replies streaming now, and the last `keep_ended` that ended
    (for `ended_for` seconds at most, so that a failure still stands out after it ends). Every
    call is quick and touches only memory: the responder calls it inline."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        max_text: int = MAX_TEXT,
        keep_ended: int = KEEP_ENDED,
        ended_for: float = ENDED_FOR,
        max_replies: int = MAX_REPLIES,
        max_watchers: int = MAX_WATCHERS,
    ) -> None:
        self.clock = clock
        self.max_text = max_text
        self._kept = max_text + REDACT_MARGIN
        self._keep_ended = keep_ended
        self._ended_for = ended_for
        self._max_replies = max_replies
        self._max_watchers = max_watchers
        self._entries: dict[int, LiveEntry] = {}  # in the order they started
        self._ended: deque[int] = deque()  # the ended ones, in the order they ended
        self._watchers: set[Watcher] = set()
        self._versions = itertools.count(1)

    # --- ReplyFeed -----------------------------------------------------------------------------

    def started(self, reply: LiveReply) -> None:
        reply_id = reply.reply_id
        if reply_id in self._entries:  # answered again in this process (crash recovery)
            self._drop(reply_id)
        if self.streaming >= self._max_replies:
            return  # a flood the page could not show anyway; the metrics count it
        self._entries[reply_id] = LiveEntry(reply, version=next(self._versions))
        self._changed(reply_id)
        self.prune()

    def shown(self, reply_id: int, text: str, *, updates: int, rate_limited: int) -> None:
        entry = self._entries.get(reply_id)
        if entry is None or entry.ended_at is not None:
            return
        entry.text = text[-self._kept :]
        entry.cut = max(len(text) - self._kept, 0)
        entry.updates, entry.rate_limited = updates, rate_limited
        if text:
            entry.status = MessageStatus.STREAMING
        entry.version = next(self._versions)
        self._changed(reply_id)

    def ended(self, reply_id: int, status: MessageStatus, error: str | None) -> None:
        entry = self._entries.get(reply_id)
        if entry is None or entry.ended_at is not None:
            return
        entry.status, entry.error, entry.ended_at = status, error, self.clock()
        entry.version = next(self._versions)
        self._ended.append(reply_id)
        self._changed(reply_id)
        self.prune()

    # --- for the page --------------------------------------------------------------------------

    def replies(self) -> list[LiveEntry]:
        """Newest first."""
        self.prune()
        return list(reversed(self._entries.values()))

    @property
    def streaming(self) -> int:
        """Replies that have not ended (waiting or streaming)."""
        return len(self._entries) - len(self._ended)

    def get(self, reply_id: int) -> LiveEntry | None:
        return self._entries.get(reply_id)

    def prune(self) -> None:
        """Forget ended replies beyond `keep_ended`, or older than `ended_for` seconds."""
        if not self._ended:
            return
        oldest = self.clock() - self._ended_for
        while self._ended and (
            len(self._ended) > self._keep_ended
            or (self._entries[self._ended[0]].ended_at or 0.0) < oldest
        ):
            reply_id = self._ended.popleft()
            del self._entries[reply_id]
            self._changed(reply_id)

    def watch(self) -> Watcher | None:
        """A new stream's watcher; None when `max_watchers` are open already."""
        if len(self._watchers) >= self._max_watchers:
            return None
        watcher = Watcher(limit=self._max_replies + self._keep_ended)
        self._watchers.add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    @property
    def backlog(self) -> int:
        """The most changed replies any stream has waiting (bounded: one entry per reply)."""
        return max((watcher.backlog for watcher in self._watchers), default=0)

    def close_watchers(self) -> None:
        """End every open stream (the console stops)."""
        for watcher in self._watchers:
            watcher.close()

    def _drop(self, reply_id: int) -> None:
        del self._entries[reply_id]
        if reply_id in self._ended:
            self._ended.remove(reply_id)

    def _changed(self, reply_id: int) -> None:
        for watcher in self._watchers:
            watcher.touch(reply_id)


@dataclass(frozen=True, slots=True)
class ReplyView:
    """A reply as the page and its events show it, every string redacted."""

    id: int
    chat_id: int
    platform: str
    place: str  # workspace / channel (and thread)
    user: str
    model: str
    started_at: float
    ended_at: float | None
    status: str
    label: str
    error: str | None
    updates: int
    rate_limited: int
    text: str
    cut: int  # earlier characters not shown


VIEW_FIELDS = tuple(field.name for field in fields(ReplyView))
BLANK = ReplyView(0, 0, "", "", "", "", 0.0, None, "pending", "waiting", None, 0, 0, "", 0)


class LiveSection:
    """The "Live" part of the console: `GET /live` (the page, its replies rendered at once) and
    `GET /live/events` (their changes, as server-sent events). `redact` is applied to every
    string sent; `close` ends the open streams (the console calls it as it stops, before its
    server waits for the requests in progress)."""

    nav = ("/live", "Live")

    def __init__(
        self,
        hub: LiveHub,
        *,
        redact: Callable[[str], str] = lambda text: text,
        interval: float = INTERVAL,
        heartbeat: float = HEARTBEAT,
        poll: float = POLL,
    ) -> None:
        self._hub = hub
        self._redact = redact
        self._interval = interval
        self._heartbeat = heartbeat
        self._poll = poll
        self._render: Render | None = None
        self._closed = False

    def add_routes(self, router: web.UrlDispatcher, render: Render) -> None:
        self._render = render
        self._closed = False  # a console started (again)
        router.add_get("/live", self._page)
        router.add_get("/live/events", self._events)

    async def close(self) -> None:
        self._closed = True
        self._hub.close_watchers()

    # --- the page ------------------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.StreamResponse:
        assert self._render is not None
        replies = [self.view(entry) for entry in self._hub.replies()]
        ended = sum(1 for reply in replies if reply.ended_at is not None)
        return self._render(
            "live.html",
            request,
            {
                "replies": replies,
                "now": self._hub.clock(),
                "streaming": len(replies) - ended,
                "ended": ended,
                "blank": BLANK,
                "duration": duration,
            },
        )

    def view(self, entry: LiveEntry) -> ReplyView:
        redact, reply = self._redact, entry.reply
        if entry.shown is None:  # what never changes, redacted once
            place = f"{reply.workspace} / {reply.channel}" if reply.workspace else reply.channel
            entry.shown = (redact(reply.platform), redact(place), redact(reply.user),
                           redact(reply.model))  # fmt: skip
        platform, place, user, model = entry.shown
        text = redact(entry.text)
        cut = entry.cut
        if len(text) > self._hub.max_text:
            cut += len(text) - self._hub.max_text
            text = text[-self._hub.max_text :]
        return ReplyView(
            id=reply.reply_id,
            chat_id=reply.chat_id,
            platform=platform,
            place=place,
            user=user,
            model=model,
            started_at=reply.started_at,
            ended_at=entry.ended_at,
            status=entry.status.value,
            label=LABELS.get(entry.status, entry.status.value),
            error=redact(entry.error) if entry.error else None,
            updates=entry.updates,
            rate_limited=entry.rate_limited,
            text=text,
            cut=cut,
        )

    # --- the events ----------------------------------------------------------------------------

    async def _events(self, request: web.Request) -> web.StreamResponse:
        watcher = None if self._closed else self._hub.watch()
        if watcher is None:
            raise web.HTTPServiceUnavailable(
                text="Too many live pages are open (or the console is stopping).",
                headers={"Retry-After": "10"},
            )
        # Sent now, with the first bytes: the console's middleware sets its headers on what a
        # handler returns, too late for a stream.
        response = web.StreamResponse(headers={**HEADERS, "X-Accel-Buffering": "no"})
        response.content_type = "text/event-stream"
        response.charset = "utf-8"
        try:
            await response.prepare(request)
            await response.write(f"retry: {RETRY_MS}\n\n".encode())
            await self._stream(request, response, watcher, request[SESSION_ACTIVE])
        except ConnectionResetError:
            pass  # the browser left while a write was on its way
        finally:
            self._hub.unwatch(watcher)
        return response

    async def _stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        watcher: Watcher,
        session_active: Callable[[], bool],
    ) -> None:
        """Until the browser leaves, the console stops or the session ends: expired, or logged
        out in any tab (the browser then reconnects, and is sent to the login page)."""
        loop = asyncio.get_running_loop()
        sent = loop.time()
        while True:
            woke = await _wait(watcher.wake, self._poll)
            transport = request.transport
            if watcher.closed.is_set() or transport is None or transport.is_closing():
                return
            if not session_active():
                return
            if woke:
                reset, changed = watcher.take()
                await response.write(self._encode(reset, changed, watcher.sent))
                sent = loop.time()
                # What changes meanwhile is sent once, as it is then.
                await _wait(watcher.closed, self._interval)
            else:
                self._hub.prune()  # a reply that ended long enough ago goes, even on a quiet day
                if loop.time() - sent >= self._heartbeat:
                    await response.write(b": keep-alive\n\n")
                    sent = loop.time()

    def _encode(self, reset: bool, changed: list[int], sent: dict[int, int]) -> bytes:
        """The events for one stream; `sent`: what its page holds (reply id -> version),
        updated to what this sends."""
        now = self._hub.clock()
        if reset:
            entries = self._hub.replies()
            replies = ",".join(self._data(entry) for entry in entries)
            sent.clear()
            sent.update((entry.reply.reply_id, entry.version) for entry in entries)
            return f'event: reset\ndata: {{"now":{now},"replies":[{replies}]}}\n\n'.encode()
        events = []
        for reply_id in changed:
            entry = self._hub.get(reply_id)
            if entry is None:
                sent.pop(reply_id, None)
                events.append(f'event: gone\ndata: {{"id":{reply_id}}}\n\n')
            else:
                data = self._data(entry, since=sent.get(reply_id))
                sent[reply_id] = entry.version
                events.append(f'event: reply\ndata: {{"now":{now},"reply":{data}}}\n\n')
        return "".join(events).encode()

    def _data(self, entry: LiveEntry, since: int | None = None) -> str:
        """The reply's JSON, made once per version however many streams send it. `since`: the
        version the page holds; when the text only grew since then, the JSON carries what was
        appended (`append`, from the text's absolute position `at`) instead of the whole end
        (`text`): a stream then sends each character about once, not up to 4,000 on every
        change."""
        view = self._view_now(entry)
        if since is not None and since != entry.version:
            if entry.appended is not None and entry.appended[:2] == (since, entry.version):
                return entry.appended[2]
            appended = _appended(entry.texts.get(since), entry.texts[entry.version])
            if appended is not None:
                data = _view_data(view)
                del data["text"]
                data["append"], data["at"] = appended
                entry.appended = (since, entry.version, _json(data))
                return entry.appended[2]
        if entry.encoded is None or entry.encoded[0] != entry.version:
            entry.encoded = (entry.version, _json(_view_data(view)))
        return entry.encoded[1]

    def _view_now(self, entry: LiveEntry) -> ReplyView:
        """The reply's view at its version, made once (its text redacted once), and its text
        kept for the appends of the versions after it."""
        if entry.view is None or entry.view[0] != entry.version:
            view = self.view(entry)
            entry.view = (entry.version, view)
            entry.texts[entry.version] = (view.cut, view.text)
            while len(entry.texts) > KEPT_VERSIONS:
                del entry.texts[next(iter(entry.texts))]
        return entry.view[1]


def _view_data(view: ReplyView) -> dict[str, object]:
    """A view's fields for its JSON. Not dataclasses.asdict: its deep copy was a third of the
    time making a reply's event (12 of 43 µs)."""
    return {name: getattr(view, name) for name in VIEW_FIELDS}


def _appended(before: tuple[int, str] | None, after: tuple[int, str]) -> tuple[str, int] | None:
    """What `after` (cut, text) adds to `before` when it only appended to it, with the absolute
    position it begins at; None when anything else changed (or `before` is not known)."""
    if before is None:
        return None
    (old_cut, old), (new_cut, new) = before, after
    end = old_cut + len(old)
    start = end - new_cut  # where the appended part begins in `new`
    if new_cut < old_cut or start < 0 or start > len(new):
        return None  # the page's text does not reach what is shown now
    if new[:start] != old[new_cut - old_cut :]:
        return None  # an earlier part changed: a redaction that now matched, a rewrite
    return new[start:], end


def _json(value: object) -> str:
    """One line of ASCII JSON (a lone surrogate in a model's text cannot break the stream) with
    no `<`, `>` or `&` in it: the text stays inert even where it would be read as markup."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


async def _wait(event: asyncio.Event, within: float) -> bool:
    """Whether `event` was set within `within` seconds."""
    try:
        async with asyncio.timeout(within):
            await event.wait()
    except TimeoutError:
        return False
    return True


def duration(seconds: float) -> str:
    """`12 s`, `3 min 05 s` (live.js writes it the same way)."""
    whole = max(int(seconds), 0)
    if whole < 60:
        return f"{whole} s"
    return f"{whole // 60} min {whole % 60:02d} s"
