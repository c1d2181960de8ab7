"""Reads Discord's X-RateLimit-* headers of the bridge's own writes, for the core's EditScheduler.

discord.py keeps its own per-bucket state, but it is shared by concurrent requests and, by design,
estimates `remaining` from the headers capped by `limit - outgoing`, so reading it after a request
tells us neither what Discord said about *our* request nor the truth under concurrency (the
emulator shows it over-sending). So we look at the responses themselves: discord.py takes an
`aiohttp.TraceConfig` (`Client(http_trace=...)`, a public option) and aiohttp awaits its
`on_request_end` callbacks inside the task that made the request. A write sets a `ContextVar` slot
before calling discord.py; the callback fills that slot with the headers, so concurrent writes in
one channel each get their own response's headers, and requests we did not make (login, commands,
typing) are ignored.

The same callback turns a per-bucket 429 on our writes into `WriteRefused` before discord.py sees
it. discord.py would otherwise sleep and re-send the stale text later than the scheduler believes
the write happened, which can push a busy channel over its bucket; raising lets the scheduler block
the bucket for Retry-After and the writer send the latest text instead. aiohttp closes the response
and re-raises an exception from a trace callback. Global 429s are left to discord.py, which pauses
every route for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import SimpleNamespace

import aiohttp
from multidict import CIMultiDictProxy

from bridge.ports import RateObservation

# Discord counts a window from when a request *arrives*; the scheduler counts from when it granted
# the write. The grant-to-arrival delay varies from write to write (event loop load, discord.py's
# own queue), so every window we report is this much longer than Discord's. It costs about 5% of
# a 5-second bucket and keeps writes granted at a window's very edge from landing inside it.
WINDOW_ALLOWANCE = 0.25
# Requests of each bucket the scheduler is not told about. None: discord.py makes the caller of a
# request that leaves its bucket empty wait until the window resets (Ratelimit.__aexit__), but the
# surface stops waiting as soon as the response is in (see DiscordReplySurface._write), so the
# whole bucket can be spent (measured: a reserve of one cost 20 % of each channel's budget).
RESERVE = 0


def scheduled_limit(limit: int) -> int:
    """The part of a bucket of `limit` requests the scheduler may spend."""
    return limit - RESERVE if limit > RESERVE else limit


class WriteRefused(Exception):
    """Discord answered one of our writes with a per-bucket 429."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"429, retry after {retry_after:.3f}s")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class SeenHeaders:
    """The rate-limit headers of one response, and when (monotonic seconds) they arrived."""

    limit: int
    remaining: int
    reset_after: float
    seen_at: float

    def observation(self, now: float) -> RateObservation | None:
        """What these headers still say at `now`; None once the window they describe is over.

        discord.py may hold a request's caller until the window resets (it sleeps when a response
        leaves no tokens), so a stale "0 remaining" must not block a window that is already new.
        """
        if self.reset_after <= 0 or now - self.seen_at >= self.reset_after:
            return None
        limit = scheduled_limit(self.limit)
        remaining = max(self.remaining - (self.limit - limit), 0)
        left = self.reset_after + WINDOW_ALLOWANCE - (now - self.seen_at)
        return RateObservation(limit=limit, remaining=remaining, reset_after=left)


@dataclass(slots=True)
class _Slot:
    headers: SeenHeaders | None = None
    # Set once a successful response (and, if wanted, its JSON body) is in.
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    wants_body: bool = False
    body: object = None


_current_write: ContextVar[_Slot | None] = ContextVar("discord_write", default=None)


class RateHeaderCapture:
    """Installs itself in discord.py's HTTP session and reports headers of the writes it wraps."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.trace_config = aiohttp.TraceConfig()
        self.trace_config.on_request_end.append(self._on_request_end)

    @contextlib.contextmanager
    def capturing(self) -> Iterator[_Slot]:
        """Wrap exactly one of our writes; the slot holds its final response's headers."""
        slot = _Slot()
        token = _current_write.set(slot)
        try:
            yield slot
        finally:
            _current_write.reset(token)

    def now(self) -> float:
        return self._clock()

    async def _on_request_end(
        self,
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        slot = _current_write.get()
        if slot is None:
            return
        response = params.response
        if response.status == 429 and not _is_global(response.headers):
            raise WriteRefused(await _retry_after(response))
        seen = _parse(response.headers, self._clock())
        if seen is not None and response.status < 300:
            slot.headers = seen
        if response.status < 300:
            if slot.wants_body:
                # aiohttp keeps the body it read, so discord.py still gets it afterwards.
                slot.body = json.loads(await response.read())
            slot.arrived.set()


def _is_global(headers: CIMultiDictProxy[str]) -> bool:
    return (
        headers.get("X-RateLimit-Global", "").lower() == "true"
        or headers.get("X-RateLimit-Scope") == "global"
    )


async def _retry_after(response: aiohttp.ClientResponse) -> float:
    """The body's `retry_after` (seconds, with decimals), else the headers' rounder numbers."""
    with contextlib.suppress(ValueError, aiohttp.ClientError):
        body = json.loads(await response.read())
        if isinstance(body, dict) and isinstance(body.get("retry_after"), int | float):
            return float(body["retry_after"])
    for name in ("X-RateLimit-Reset-After", "Retry-After"):
        with contextlib.suppress(KeyError, ValueError):
            return float(response.headers[name])
    return 1.0


def _parse(headers: CIMultiDictProxy[str], now: float) -> SeenHeaders | None:
    try:
        limit = int(headers["X-RateLimit-Limit"])
        remaining = int(headers["X-RateLimit-Remaining"])
        if "X-RateLimit-Reset-After" in headers:
            reset_after = float(headers["X-RateLimit-Reset-After"])
        else:
            reset_after = float(headers["X-RateLimit-Reset"]) - time.time()
    except (KeyError, ValueError):
        return None
    return SeenHeaders(limit, remaining, max(reset_after, 0.0), now)
