"""Delivers event_callback bodies over Socket Mode or signed HTTP, and retries like Slack.

An attempt not acked (Socket Mode) or not answered with 2xx (HTTP) within `ack_timeout` is
re-sent with the same event_id, up to `max_retries` times, carrying retry_attempt/retry_reason
(X-Slack-Retry-Num / X-Slack-Retry-Reason over HTTP).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from sandbox.slack_emulator.socket_mode import SocketAck, SocketHub

DeliveryMode = Literal["socket", "http"]
# Slack retries a failed delivery three times: nearly at once, after a minute, after five minutes.
SLACK_RETRY_DELAYS = (0.0, 60.0, 300.0)


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), "")

    @property
    def content_type(self) -> str:
        return self.header("Content-Type").split(";", 1)[0].strip().lower()


@dataclass(slots=True)
class Attempt:
    retry_num: int
    retry_reason: str | None
    sent_at: float
    envelope_id: str | None = None
    http_status: int | None = None
    acked_at: float | None = None
    failure: str | None = None  # why it counts as not delivered: no_receiver, http_timeout, ...


@dataclass(slots=True)
class Delivery:
    """One event (one event_id) and every attempt to hand it over."""

    body: dict[str, Any]
    attempts: list[Attempt] = field(default_factory=list)
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    gave_up: bool = False

    @property
    def event_id(self) -> str:
        return str(self.body["event_id"])

    @property
    def event_type(self) -> str:
        return str(self.body["event"].get("type", ""))


@dataclass(slots=True)
class DeliveryStats:
    events_delivered: int = 0  # first attempts that reached the app
    retries: int = 0  # later attempts that reached the app
    acks: int = 0
    events_dropped: int = 0  # nobody connected / no event_url
    events_failed: int = 0  # retries exhausted without an ack


class EventDelivery:
    def __init__(self, *, hub: SocketHub, signing_secret: str, clock: Callable[[], float]) -> None:
        self.hub = hub
        self.signing_secret = signing_secret
        self.clock = clock
        self.mode: DeliveryMode = "socket"
        self.event_url: str | None = None
        self.ack_timeout = 3.0
        self.max_retries = 3
        # Pause before retry n (after its attempt failed or timed out); tests shorten it.
        self.retry_delays: tuple[float, ...] = SLACK_RETRY_DELAYS
        self.deliveries: list[Delivery] = []
        self.stats = DeliveryStats()
        self._by_envelope: dict[str, tuple[Delivery, Attempt]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.on_change: Callable[[], None] = lambda: None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def busy(self) -> bool:
        """Whether background deliveries or retries are still running."""
        return bool(self._tasks)

    def spawn(self, body: dict[str, Any]) -> None:
        """Deliver in the background (events caused by Web API calls must not slow the call)."""
        self._track(asyncio.create_task(self.deliver(body)))

    async def deliver(
        self, body: dict[str, Any], *, retries: int = 0, retry_reason: str | None = None
    ) -> Delivery:
        """First attempt now, `retries` forced re-sends, then auto-retries in the background."""
        delivery = Delivery(body)
        self.deliveries.append(delivery)
        attempt = await self._attempt(delivery, 0, None)
        if attempt.failure == "no_receiver":
            self.stats.events_dropped += 1
            self.on_change()
            return delivery
        for n in range(1, retries + 1):
            await self._attempt(delivery, n, retry_reason or self._default_reason(attempt))
        self._track(asyncio.create_task(self._retry_until_acked(delivery)))
        return delivery

    def _default_reason(self, last: Attempt) -> str:
        if self.mode == "socket":
            return "timeout"
        return last.failure or "http_timeout"

    async def _retry_until_acked(self, delivery: Delivery) -> None:
        while True:
            last = delivery.attempts[-1]
            if last.envelope_id is not None:  # Socket Mode: the ack comes back on its own
                remaining = last.sent_at + self.ack_timeout - self.clock()
                try:
                    await asyncio.wait_for(delivery.acked.wait(), max(remaining, 0.0))
                except TimeoutError:
                    pass
            if delivery.acked.is_set() or last.failure == "no_retry":
                return
            if last.retry_num >= self.max_retries:
                delivery.gave_up = True
                self.stats.events_failed += 1
                self.on_change()
                return
            delays = self.retry_delays
            pause = delays[min(last.retry_num, len(delays) - 1)] if delays else 0.0
            if pause > 0:
                try:
                    await asyncio.wait_for(delivery.acked.wait(), pause)
                    return  # a late ack of an earlier attempt (Socket Mode) arrived meanwhile
                except TimeoutError:
                    pass
            attempt = await self._attempt(delivery, last.retry_num + 1, self._default_reason(last))
            if attempt.failure == "no_receiver":
                delivery.gave_up = True
                self.stats.events_dropped += 1
                self.on_change()
                return

    async def _attempt(self, delivery: Delivery, retry_num: int, reason: str | None) -> Attempt:
        attempt = Attempt(retry_num, reason, self.clock())
        delivery.attempts.append(attempt)
        if self.mode == "socket":
            await self._send_envelope(delivery, attempt)
        else:
            await self._post(delivery, attempt)
        if attempt.failure != "no_receiver":
            if retry_num == 0:
                self.stats.events_delivered += 1
            else:
                self.stats.retries += 1
        self.on_change()
        return attempt

    async def _send_envelope(self, delivery: Delivery, attempt: Attempt) -> None:
        attempt.envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": attempt.envelope_id,
            "payload": delivery.body,
            "type": "events_api",
            "accepts_response_payload": False,
            "retry_attempt": attempt.retry_num,
            "retry_reason": attempt.retry_reason or "",
        }
        self._by_envelope[attempt.envelope_id] = (delivery, attempt)
        if await self.hub.send(envelope) is None:
            attempt.failure = "no_receiver"

    def on_ack(self, ack: SocketAck) -> None:
        found = self._by_envelope.pop(ack.envelope_id, None)
        if found is None:
            return
        delivery, attempt = found
        attempt.acked_at = ack.at
        self.stats.acks += 1
        delivery.acked.set()
        self.on_change()

    async def _post(self, delivery: Delivery, attempt: Attempt) -> None:
        if self.event_url is None or self._session is None:
            attempt.failure = "no_receiver"
            return
        body = json.dumps(delivery.body).encode()
        headers = self.signed_headers(body)
        if attempt.retry_num:
            headers["X-Slack-Retry-Num"] = str(attempt.retry_num)
            headers["X-Slack-Retry-Reason"] = attempt.retry_reason or "http_timeout"
        try:
            status, no_retry = await self.post(body, headers)
        except TimeoutError:
            attempt.failure = "http_timeout"
            return
        except aiohttp.ClientError:
            attempt.failure = "connection_failed"
            return
        attempt.http_status = status
        if 200 <= status < 300:
            attempt.acked_at = self.clock()
            self.stats.acks += 1
            delivery.acked.set()
        else:
            attempt.failure = "no_retry" if no_retry else "http_error"

    def signed_headers(
        self, body: bytes, *, timestamp: str | None = None, signature: str | None = None
    ) -> dict[str, str]:
        ts = timestamp if timestamp is not None else str(int(time.time()))
        return {
            "Content-Type": "application/json",
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature or slack_signature(self.signing_secret, ts, body),
        }

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bool]:
        """POST to event_url; returns the status and whether the app said X-Slack-No-Retry."""
        answer = await self.exchange(body, headers)
        return answer.status, answer.header("X-Slack-No-Retry") == "1"

    async def exchange(
        self, body: bytes, headers: dict[str, str], url: str | None = None
    ) -> HttpAnswer:
        """POST to `url` (default: event_url) and read the whole answer (a slash command's body
        is its reply; an interaction's is its ack)."""
        url = url or self.event_url
        if url is None or self._session is None:
            raise RuntimeError("event_url is not set or the emulator is not started")
        timeout = aiohttp.ClientTimeout(total=self.ack_timeout)
        async with self._session.post(url, data=body, headers=headers, timeout=timeout) as response:
            content = await response.read()
            return HttpAnswer(response.status, dict(response.headers), content)

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
