"""Slack Web API failures in the core's terms: a 429 is `RateLimited`, a network error or 5xx
`SlackUnavailable` (retryable), anything else a `SlackCallFailed` (a `PlatformError` that keeps
Slack's error code for the adapter's decisions).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError

from bridge.ports import PlatformError, PlatformUnavailable, RateLimited

# Used when a 429 comes without a usable Retry-After (Slack always sends one; proxies may not).
DEFAULT_RETRY_AFTER = 1.0

T = TypeVar("T")


class SlackCallFailed(PlatformError):
    """A Web API call answered `ok: false` (or did not reach Slack); `code` is Slack's error."""

    def __init__(self, method: str, code: str, where: str) -> None:
        super().__init__(f"{method} failed in {where}: {code}")
        self.method = method
        self.code = code


class SlackUnavailable(SlackCallFailed, PlatformUnavailable):
    """Slack could not be reached or failed on its side (5xx): the same call may succeed later.

    Still a SlackCallFailed, so cosmetic calls that give up on any failure keep doing so; the
    reply writer retries its edit instead of repeating the text in a new message.
    """


async def call(method: str, where: str, request: Awaitable[T]) -> T:
    """Await one SDK call; `where` (channel/thread, never a token) goes into the error message."""
    try:
        return await request
    except SlackApiError as exc:
        raise translate(exc, method, where) from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        # slack_sdk already retried a failed connection once (its default retry handler).
        raise SlackUnavailable(method, type(exc).__name__, where) from exc


def translate(exc: SlackApiError, method: str, where: str) -> RateLimited | SlackCallFailed:
    response = exc.response
    if response.status_code == 429:
        return RateLimited(_retry_after(response.headers), f"({method} in {where})")
    data = response.data if isinstance(response.data, dict) else {}
    code = str(data.get("error") or f"http_{response.status_code}")
    if response.status_code >= 500:
        return SlackUnavailable(method, code, where)
    return SlackCallFailed(method, code, where)


def _retry_after(headers: Any) -> float:
    try:
        value = float(headers.get("Retry-After") or headers.get("retry-after") or 0)
    except (TypeError, ValueError, AttributeError):
        return DEFAULT_RETRY_AFTER
    return value if value > 0 else DEFAULT_RETRY_AFTER
