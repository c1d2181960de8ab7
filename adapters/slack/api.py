"""Slack Web API failures in the core's terms: a 429 is `RateLimited`, a network error or 5xx
`SlackUnavailable` (retryable), anything else a `SlackCallFailed` (a `PlatformError` that keeps
Slack's error code for the adapter's decisions). Also which calls slack_sdk may send twice.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from bridge.ports import PermissionDenied, PlatformError, PlatformUnavailable, RateLimited

# Used when a 429 comes without a usable Retry-After (Slack always sends one; proxies may not).
DEFAULT_RETRY_AFTER = 1.0

# Calls that end the same when Slack gets them twice: reads, and writes that set a state. A
# repeated chat.stopStream is refused (message_not_in_streaming_state) and the stream then ends
# with chat.update, so nothing shows twice. Every other call, above all those that create
# something (chat.postMessage, chat.startStream, chat.appendStream), is sent once.
REPLAYABLE_METHODS = frozenset(
    {
        "auth.test",
        "apps.connections.open",
        "conversations.replies",
        "users.info",
        "chat.update",
        "chat.stopStream",
        "chat.delete",
        "assistant.threads.setStatus",
        "assistant.threads.setTitle",
        "assistant.threads.setSuggestedPrompts",
    }
)

T = TypeVar("T")


class SlackCallFailed(PlatformError):
    """A Web API call answered `ok: false` (or did not reach Slack); `code` is Slack's error."""

    def __init__(self, method: str, code: str, where: str) -> None:
        super().__init__(f"{method} failed in {where}: {code}")
        self.method = method
        self.code = code


class ReplaySafeRetryHandler(AsyncConnectionErrorRetryHandler):
    """slack_sdk's retry after a broken connection, only where sending twice is harmless.

    A connection lost after the request went out (ServerDisconnectedError, a reset) leaves it
    open whether Slack acted on it; the SDK's default handler sends it again, and a reply is
    posted twice. Here only REPLAYABLE_METHODS are sent again then; any call is when the
    connection was never made (ClientConnectorError: nothing was sent). What is not retried
    reaches `call` and becomes SlackUnavailable.
    """

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if not await super()._can_retry_async(
            state=state, request=request, response=response, error=error
        ):
            return False
        if isinstance(error, aiohttp.ClientConnectorError):
            return True
        return api_method(request.url) in REPLAYABLE_METHODS


def api_method(url: str) -> str:
    """`chat.postMessage` from `https://slack.com/api/chat.postMessage` (any base URL)."""
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


# Errors that say the bot may not write there: every reply in that place fails the same way.
PERMISSION_ERRORS = frozenset(
    {"not_in_channel", "channel_not_found", "is_archived", "restricted_action",
     "restricted_action_read_only_channel", "restricted_action_thread_only_channel",
     "restricted_action_non_threadable_channel", "ekm_access_denied", "access_denied",
     "team_access_not_granted", "no_permission", "missing_scope"}
)  # fmt: skip


class SlackPermissionDenied(SlackCallFailed, PermissionDenied):
    """Slack refused the call because of the bot's access to the channel or its scopes."""


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
        # slack_sdk already retried a failed connection once if the call is safe to repeat
        # (ReplaySafeRetryHandler); a post that may have gone through is not sent again.
        unavailable = SlackUnavailable(method, type(exc).__name__, where)
        # Nothing was sent when the connection was never made; otherwise Slack may have acted.
        unavailable.repeatable = isinstance(exc, aiohttp.ClientConnectorError)
        raise unavailable from exc


def translate(exc: SlackApiError, method: str, where: str) -> RateLimited | SlackCallFailed:
    response = exc.response
    if response.status_code == 429:
        return RateLimited(_retry_after(response.headers), f"({method} in {where})")
    data = response.data if isinstance(response.data, dict) else {}
    code = str(data.get("error") or f"http_{response.status_code}")
    if response.status_code >= 500:
        return SlackUnavailable(method, code, where)
    if code in PERMISSION_ERRORS:
        return SlackPermissionDenied(method, code, where)
    return SlackCallFailed(method, code, where)


def _retry_after(headers: Any) -> float:
    try:
        value = float(headers.get("Retry-After") or headers.get("retry-after") or 0)
    except (TypeError, ValueError, AttributeError):
        return DEFAULT_RETRY_AFTER
    return value if value > 0 else DEFAULT_RETRY_AFTER
