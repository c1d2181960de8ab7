"""Streams completions from any OpenAI-compatible endpoint through the openai SDK.

The SDK does the request (auth, base URL, timeouts, typed errors); the stream's body is split into
SSE lines here and each chunk decoded with one json.loads. Building the SDK's pydantic chunk objects
costs about ten times more CPU per chunk, the hot loop at hundreds of concurrent replies. This is
also where the model's text enters the bridge: it is cleaned here (`bridge.text.clean_text`), and
a body that ends before the reply was finished is an error, never a complete reply.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import openai

from bridge.config import LLMSettings
from bridge.domain import TokenUsage
from bridge.ports import CompletionRequest, Delta, Finished, LLMError, StreamEvent
from bridge.text import clean_text

log = logging.getLogger(__name__)


class OpenAICompatibleModel:
    """The LanguageModel port on AsyncOpenAI; retries are the responder's, not the SDK's."""

    def __init__(self, settings: LLMSettings, *, client: openai.AsyncOpenAI | None = None) -> None:
        key = settings.api_key.get_secret_value() if settings.api_key else "not-needed"
        timeout = openai.Timeout(settings.request_timeout, connect=10.0, read=settings.idle_timeout)
        self._client = client or openai.AsyncOpenAI(
            base_url=settings.base_url,
            api_key=key,
            max_retries=0,
            timeout=timeout,
            # aiohttp's C parser reads a stream for a fraction of the CPU of the default transport.
            http_client=openai.DefaultAioHttpClient(timeout=timeout),
        )
        # A stream has no read timeout of its own: aiohttp would cancel and re-arm a timer on
        # every network read (a fifth of the event loop's work at a thousand streams). The
        # responder times the gaps between deltas instead (`llm.idle_timeout`), which covers the
        # wait for the response's headers too.
        self._stream_timeout = openai.Timeout(settings.request_timeout, connect=10.0, read=None)
        self.name = "llm"

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self._client.close()

    def _arguments(self, request: CompletionRequest, *, stream: bool) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "model": request.model,
            "messages": [{"role": t.role.value, "content": t.content} for t in request.messages],
            "temperature": request.temperature,
        }
        if request.n != 1:
            arguments["n"] = request.n
        if request.max_tokens is not None:
            arguments["max_tokens"] = request.max_tokens
        if stream:
            arguments["stream"] = True
            arguments["stream_options"] = {"include_usage": True}
        return arguments

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        create = self._client.chat.completions.with_streaming_response.create
        try:
            arguments = self._arguments(request, stream=True)
            async with create(**arguments, timeout=self._stream_timeout) as response:
                _require_event_stream(response.http_response.headers.get("content-type"))
                lines = SSELines()
                reply = StreamDecoder()
                async for data in response.http_response.aiter_bytes():
                    for line in lines.feed(data):
                        events = reply.line_events(line)
                        if events is None:
                            return
                        for event in events:
                            yield event
                # A last line the server did not end before closing.
                events = reply.line_events(lines.end())
                if events is None:
                    return
                for event in events:
                    yield event
                if not reply.finished:
                    raise LLMError(
                        "the model's stream ended before the reply was finished", retryable=True
                    )
        except openai.APIError as exc:
            raise _translate(exc) from exc
        except (OSError, ValueError) as exc:
            raise LLMError(f"stream broken: {exc}", retryable=True) from exc
        except Exception as exc:
            # httpx2's transport errors are not re-exported by openai: they mean a lost connection.
            if type(exc).__module__.startswith(("httpx2", "httpcore2", "h11")):
                raise LLMError(f"connection lost: {type(exc).__name__}", retryable=True) from exc
            raise

    async def complete(self, request: CompletionRequest) -> str:
        try:
            result = await self._client.chat.completions.create(
                **self._arguments(request, stream=False)
            )
        except openai.APIError as exc:
            raise _translate(exc) from exc
        if not result.choices:
            return ""
        return clean_text(result.choices[0].message.content or "")


class SSELines:
    """Splits a byte stream into SSE lines (ended by CRLF, LF or CR), keeping a partial last line.

    One bytes.splitlines per network read instead of the SDK's text decoding and line decoder,
    which run Python code per character class and per line: this loop runs for every token of
    every concurrent reply.
    """

    def __init__(self) -> None:
        self._partial = b""
        self._after_cr = False

    def feed(self, data: bytes) -> list[bytes]:
        if not data:
            return []
        if self._after_cr and data.startswith(b"\n"):
            data = data[1:]  # the LF of a CRLF split across two reads
        self._after_cr = data.endswith(b"\r")
        if self._partial:
            data = self._partial + data
        lines = data.splitlines()
        if data and not data.endswith((b"\n", b"\r")):
            self._partial = lines.pop()
        else:
            self._partial = b""
        return lines

    def end(self) -> bytes:
        """The unterminated last line, once the stream has ended."""
        partial, self._partial = self._partial, b""
        return partial


class StreamDecoder:
    """Turns the SSE lines of one stream into events, and knows whether the reply was finished.

    A reply is finished by `data: [DONE]` or, as some servers close without it, once every
    choice that wrote text has its finish_reason. Anything else is a body that broke off.
    """

    __slots__ = ("_written", "_finished")

    def __init__(self) -> None:
        self._written: set[int] = set()
        self._finished: set[int] = set()

    @property
    def finished(self) -> bool:
        return bool(self._finished) and self._written <= self._finished

    def line_events(self, line: bytes) -> list[StreamEvent] | None:
        """The events of one SSE line; None for the end of the stream (`data: [DONE]`)."""
        if not line.startswith(b"data:"):
            return []  # blank separators, comments (": keep-alive"), event names
        payload = line[5:].strip()
        if payload == b"[DONE]":
            return None
        return self._events(payload)

    def _events(self, payload: bytes) -> list[StreamEvent]:
        try:
            chunk = json.loads(payload)
        except ValueError as exc:
            raise LLMError(f"malformed stream chunk: {payload[:80]!r}", retryable=True) from exc
        if not isinstance(chunk, dict):
            raise LLMError(f"malformed stream chunk: {payload[:80]!r}", retryable=True)
        error = chunk.get("error")
        if error is not None:
            message = error.get("message", error) if isinstance(error, dict) else error
            raise LLMError(clean_text(str(message)), retryable=False)
        events: list[StreamEvent] = []
        for choice in chunk.get("choices") or ():
            index = int(choice.get("index", 0))
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content and isinstance(content, str):
                content = clean_text(content)
                if content:  # a delta that was only NULs
                    events.append(Delta(index, content))
                    self._written.add(index)
            reason = choice.get("finish_reason")
            if reason:
                events.append(Finished(index, reason))
                self._finished.add(index)
        usage = chunk.get("usage")
        if usage:
            events.append(
                TokenUsage(
                    int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
                )
            )
        return events


def _require_event_stream(content_type: str | None) -> None:
    """A 200 that is not SSE (a whole JSON completion, a proxy's HTML page) is no reply at all.

    The error names the media type, never the body: a page can be any size and say anything.
    """
    media_type = (content_type or "").partition(";")[0].strip().lower()
    if media_type == "text/event-stream":
        return
    shown = "".join(c for c in media_type if c.isprintable())[:60] or "no content type"
    hint = _CONTENT_TYPE_HINTS.get(media_type, "")
    raise LLMError(f"the model answered {shown} instead of an event stream{hint}", retryable=False)


_CONTENT_TYPE_HINTS = {
    "application/json": " (does the server support stream=true?)",
    "text/html": " (a web page: a proxy or login page in front of the model?)",
}


def _translate(exc: openai.APIError) -> LLMError:
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retry_after = _retry_after(exc.response.headers)
        retryable = status in (408, 409, 429) or status >= 500
        return LLMError(
            f"HTTP {status}: {_message(exc)}", retryable=retryable, retry_after=retry_after
        )
    if isinstance(exc, openai.APIConnectionError):
        # The SDK's aiohttp transport reports a refused connection as a timeout ("Request timed
        # out."); the transport error it wraps says what happened.
        cause = str(exc.__cause__ or "") or exc.message
        return LLMError(f"cannot reach the model: {cause}", retryable=True)
    return LLMError(_message(exc), retryable=False)


def _message(exc: openai.APIError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and "message" in inner:
            return str(inner["message"])
        if "message" in body:
            return str(body["message"])
    return exc.message


def _retry_after(headers: Any) -> float | None:
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(float(value) / divisor, 0.0)
        except ValueError:
            continue  # an HTTP date; rare enough to fall back to our own back-off
    return None
