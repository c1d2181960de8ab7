"""Streams completions from any OpenAI-compatible endpoint through the openai SDK.

The SDK does the request (auth, base URL, timeouts, typed errors); the stream's body is decoded
by `adapters.llm.sse`, which is where the model's text (and reasoning) enters the bridge. A body
that ends before the reply was finished is an error, never a complete reply. Images go as
content parts as `llm.vision` allows (`adapters.llm.vision`); tools as functions with names the
API accepts, unless the model's endpoint refused them (`adapters.llm.tools`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import openai

from adapters.llm.reasoning import strip_think_blocks
from adapters.llm.sse import SSELines, StreamDecoder
from adapters.llm.tools import ToolNames, ToolPolicy, wire_tools
from adapters.llm.vision import NOT_ACCEPTED, VisionPolicy, has_images, wire_messages
from bridge.config import LLMSettings
from bridge.ports import CompletionRequest, LLMError, StreamEvent
from bridge.text import clean_text

__all__ = ["OpenAICompatibleModel", "SSELines", "StreamDecoder"]

log = logging.getLogger(__name__)


class OpenAICompatibleModel:
    """The LanguageModel port on AsyncOpenAI; retries are the responder's, not the SDK's.

    The retries made here: a request whose images the model refuses (`llm.vision = "auto"`)
    is sent again at once without them, and one whose tools it refuses without those (and
    without the tool turns of its history), before anything of the reply was yielded.
    """

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
        # The models found text-only stay so for the life of this client (of the process).
        self._vision = VisionPolicy(settings.vision)
        self._tools = ToolPolicy()
        self.name = "llm"

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self._client.close()

    def tools_refused(self, model: str) -> bool:
        """Whether `model`'s endpoint refused tools: its requests go without them."""
        return not self._tools.offers(model)

    def _tool_names(self, request: CompletionRequest) -> ToolNames | None:
        """The wire names of the request's tools; None when none go with it."""
        if not request.tools or not self._tools.offers(request.model):
            return None
        return ToolNames(request.tools)

    async def _arguments(
        self,
        request: CompletionRequest,
        *,
        stream: bool,
        image_note: str | None,
        names: ToolNames | None = None,
    ) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "model": request.model,
            "messages": await wire_messages(request.messages, image_note, names),
            "temperature": request.temperature,
        }
        if names is not None:
            arguments["tools"] = wire_tools(request.tools, names)
            if request.tool_choice != "auto":
                arguments["tool_choice"] = request.tool_choice
        if request.n != 1:
            arguments["n"] = request.n
        if request.max_tokens is not None:
            arguments["max_tokens"] = request.max_tokens
        if stream:
            arguments["stream"] = True
            arguments["stream_options"] = {"include_usage": True}
        return arguments

    def _images_refused(
        self, request: CompletionRequest, image_note: str | None, exc: openai.APIStatusError
    ) -> bool:
        """Whether `exc` refused the images this request sent (then it goes again without)."""
        if image_note is not None or not has_images(request.messages):
            return False
        return self._vision.refused(request.model, exc.status_code, _message(exc))

    def _tools_refused(
        self, request: CompletionRequest, names: ToolNames | None, exc: openai.APIStatusError
    ) -> bool:
        """Whether `exc` refused the tools this request sent (then it goes again without)."""
        if names is None:
            return False
        return self._tools.refused(request.model, exc.status_code, _message(exc))

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        create = self._client.chat.completions.with_streaming_response.create
        image_note = self._vision.note_for(request.model)
        names = self._tool_names(request)
        try:
            async with contextlib.AsyncExitStack() as stack:
                # The request is answered (or refused) before its body is read: a retry here can
                # never follow anything yielded. Each refusal (images, tools) happens once.
                while True:
                    arguments = await self._arguments(
                        request, stream=True, image_note=image_note, names=names
                    )
                    try:
                        response = await stack.enter_async_context(
                            create(**arguments, timeout=self._stream_timeout)
                        )
                        break
                    except openai.APIStatusError as exc:
                        if self._images_refused(request, image_note, exc):
                            image_note = NOT_ACCEPTED
                        elif self._tools_refused(request, names, exc):
                            names = None
                        else:
                            raise
                _require_event_stream(response.http_response.headers.get("content-type"))
                lines = SSELines()
                reply = StreamDecoder(names)
                async for data in response.http_response.aiter_bytes():
                    for line in lines.feed(data):
                        events = reply.line_events(line)
                        if events is None:
                            for event in reply.end_events():
                                yield event
                            return
                        for event in events:
                            yield event
                # A last line the server did not end before closing.
                events = reply.line_events(lines.end())
                for event in events or ():
                    yield event
                for event in reply.end_events():
                    yield event
                if events is not None and not reply.finished:
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
        """The first choice's text, without any think block of the model's. No tools go with it
        (nor the tool turns of its history)."""
        image_note = self._vision.note_for(request.model)
        try:
            while True:
                arguments = await self._arguments(request, stream=False, image_note=image_note)
                try:
                    result = await self._client.chat.completions.create(**arguments)
                    break
                except openai.APIStatusError as exc:
                    if not self._images_refused(request, image_note, exc):
                        raise
                    image_note = NOT_ACCEPTED
        except openai.APIError as exc:
            raise _translate(exc) from exc
        if not result.choices:
            return ""
        return strip_think_blocks(clean_text(result.choices[0].message.content or ""))


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
        if isinstance(inner, str):  # LM Studio: {"error": "Model does not support images..."}
            return inner
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
