"""The local OpenAI-compatible LLM: ``/v1/chat/completions`` and ``/v1/models`` on a LocalServer.

Tests script its replies and faults; the sandbox and the benchmarks run it with a default responder.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from ..local_server import LocalServer
from .content import NO_VISION_MESSAGE, estimate_prompt_tokens, first_image_part, without_image_data
from .script import FaultKind, Responder, ScriptedReply, echo_reply
from .stream import LLMServerStats, ReplyStream, wait_until
from .ticker import Ticker
from .tools import NO_TOOLS_MESSAGE, takes_no_tools, tool_reply
from .wire import (
    PROXY_PAGE,
    ChunkEvents,
    completion_body,
    error_body,
    fault_headers,
    models_body,
    status_error_body,
    tool_call_bodies,
)

_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
# Long chat histories must not trip aiohttp's 1 MiB default body limit.
_MAX_BODY = 64 * 1024 * 1024


def _invalid(message: str, param: str | None = None) -> web.Response:
    body = error_body(message, error_type="invalid_request_error", param=param)
    return web.json_response(body, status=400)


class LLMServer(LocalServer):
    """An OpenAI-compatible chat-completions server on 127.0.0.1, scripted from the test.

    Each request to ``/v1/chat/completions`` consumes the next scripted reply, or asks
    ``responder`` once the script is empty. ``tick`` is the pacing granularity: chunks that fall
    due within one tick leave in one write.

    ``requests`` holds the bodies received (``record_requests``), the last ``keep_requests`` of
    them if set; ``record_images=False`` keeps image parts but cuts their data URLs to the
    head. ``vision=False`` is a model without vision: a request with an image part is answered
    with HTTP 400 and ``vision_error`` (OpenAI's words by default), consuming no reply.

    Tools: a scripted reply may call them (``ScriptedReply.tool_calls``); without a script, the
    directives and the demo of ``tools`` answer before ``responder``. A model whose name holds
    "no-tools" answers a request with ``tools`` with HTTP 400 (``NO_TOOLS_MESSAGE``), consuming
    no reply.
    """

    def __init__(
        self,
        default_tokens_per_second: float | None = None,
        tick: float = 0.02,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Sequence[str] = ("local-llm",),
        record_requests: bool = True,
        keep_requests: int | None = None,
        record_images: bool = True,
        vision: bool = True,
    ) -> None:
        if default_tokens_per_second is not None and default_tokens_per_second <= 0:
            raise ValueError("default_tokens_per_second must be > 0 (None means no pacing)")
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)
        app.on_shutdown.append(self._close_streams)
        super().__init__(app, host=host, port=port)
        self.default_tokens_per_second = default_tokens_per_second
        self.tick = tick
        self.models = list(models)
        self.responder: Responder = echo_reply
        self.requests: list[dict[str, Any]] = []
        self.stats = LLMServerStats()
        self.record_requests = record_requests
        self.keep_requests = keep_requests
        self.record_images = record_images
        self.vision = vision
        self.vision_error = NO_VISION_MESSAGE
        self._script: deque[ScriptedReply] = deque()
        self._ticker = Ticker(tick)
        self._streaming: set[asyncio.BaseTransport] = set()
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        """What ``AsyncOpenAI(base_url=...)`` takes, e.g. ``http://127.0.0.1:54321/v1``."""
        return f"{self.url}/v1"

    @property
    def scripted(self) -> int:
        """Scripted replies not consumed yet."""
        return len(self._script)

    @property
    def ticker(self) -> Ticker:
        return self._ticker

    def script(self, *replies: ScriptedReply | str) -> None:
        """Queue replies; a plain string is a reply with that text."""
        self._script.extend(
            r if isinstance(r, ScriptedReply) else ScriptedReply(r) for r in replies
        )

    async def start(self) -> None:
        self._ticker = Ticker(self.tick)
        await super().start()

    async def __aenter__(self) -> LLMServer:
        await self.start()
        return self

    async def _close_streams(self, _app: web.Application) -> None:
        # aiohttp waits up to a minute for running handlers on shutdown; a stalled stream would
        # hold stop() that long, so end every stream first.
        self._ticker.close()
        for transport in list(self._streaming):
            if isinstance(transport, asyncio.Transport):
                transport.abort()

    def _denied(self, request: web.Request) -> web.Response | None:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and key.strip():
            return None
        body = error_body(_NO_KEY, error_type="invalid_request_error")
        return web.json_response(body, status=401)

    async def _models(self, request: web.Request) -> web.Response:
        return self._denied(request) or web.json_response(models_body(self.models, 1_700_000_000))

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        try:
            body = await request.json()
        except ValueError:
            return _invalid("We could not parse the JSON body of your request.")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _invalid("'messages' is a required property", param="messages")
        n = body.get("n") or 1
        if not isinstance(n, int) or n < 1:
            return _invalid(f"{n!r} is less than the minimum of 1 - 'n'", param="n")

        self.stats.requests += 1
        self._record(body)
        if not self.vision and (refused := self._refuse_images(body)) is not None:
            return refused
        if takes_no_tools(body):
            return _invalid(NO_TOOLS_MESSAGE, param="tools")
        if self._script:
            reply = self._script.popleft()
        else:
            reply = tool_reply(body) or self.responder(body)
        fault = reply.fault
        request_id = f"req_{next(self._ids):012d}"
        if fault is not None and fault.kind is FaultKind.STATUS:
            headers = {"x-request-id": request_id, **fault_headers(fault)}
            error = status_error_body(fault.status_code, fault.message)
            return web.json_response(error, status=fault.status_code, headers=headers)
        if fault is not None and fault.kind is FaultKind.NOT_A_STREAM:
            return self._not_a_stream(body, reply, n, request_id, fault.content_type)
        if body.get("stream") is True:
            return await self._stream(request, body, reply, n, request_id)
        return await self._complete(request, body, reply, n, request_id)

    def _record(self, body: dict[str, Any]) -> None:
        if not self.record_requests:
            return
        self.requests.append(body if self.record_images else without_image_data(body))
        keep = self.keep_requests
        if keep is not None and len(self.requests) > keep:
            del self.requests[: len(self.requests) - keep]

    def _refuse_images(self, body: dict[str, Any]) -> web.Response | None:
        where = first_image_part(body)
        if where is None:
            return None
        param = "messages.[{}].content.[{}].type".format(*where)
        return _invalid(self.vision_error, param=param)

    def _interval(self, reply: ScriptedReply) -> float:
        tps = reply.tokens_per_second or self.default_tokens_per_second
        return 1.0 / tps if tps else 0.0

    def _model(self, body: dict[str, Any], reply: ScriptedReply) -> str:
        return reply.model or str(body.get("model") or self.models[0])

    async def _stream(
        self, request: web.Request, body: dict[str, Any], reply: ScriptedReply, n: int, rid: str
    ) -> web.StreamResponse:
        choices = reply.choice_chunks(n)
        thinking = reply.reasoning_chunks()
        if thinking:
            choices = [thinking + chunks for chunks in choices]
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        events = ChunkEvents(
            completion_id=f"chatcmpl-{rid[4:]}",
            created=int(time.time()),
            model=self._model(body, reply),
            n_choices=len(choices),
            finish_reason=reply.finish(),
            include_usage=include_usage,
            reasoning_key=reply.reasoning_as,
        )
        tool_events = None
        if reply.tool_calls:
            tool_events = [
                events.tool_calls(i, reply.tool_calls, _call_ids(reply, rid, i))
                for i in range(len(choices))
            ]
        usage_event = None
        if include_usage:
            completion_tokens = sum(len(chunks) for chunks in choices)
            completion_tokens += sum(map(len, tool_events or ()))
            usage_event = events.usage(estimate_prompt_tokens(body), completion_tokens)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "x-request-id": rid,
            }
        )
        transport = request.transport
        if transport is None:
            return response  # the client already left
        self.stats.streams_started += 1
        self.stats.peak_streams_active = max(
            self.stats.peak_streams_active, self.stats.streams_active
        )
        self._streaming.add(transport)
        completed = False
        try:
            await response.prepare(request)
            completed = await ReplyStream(
                request=request,
                response=response,
                ticker=self._ticker,
                stats=self.stats,
                events=events,
                choices=choices,
                interval=self._interval(reply),
                first_token_delay=reply.first_token_delay,
                fault=reply.fault,
                usage_event=usage_event,
                send_done=reply.send_done,
                reasoning_steps=len(thinking),
                reasoning_interval=_step_interval(reply.reasoning_seconds, len(thinking)),
                reasoning_in_content=reply.reasoning_as == "think",
                tool_events=tool_events,
            ).run()
        except ConnectionError:
            pass  # the client left while the headers were going out
        finally:
            self._streaming.discard(transport)
            if completed:
                self.stats.streams_completed += 1
            else:
                self.stats.streams_aborted += 1
        return response

    def _not_a_stream(
        self, body: dict[str, Any], reply: ScriptedReply, n: int, rid: str, content_type: str
    ) -> web.Response:
        if content_type.split(";")[0].strip().lower() != "application/json":
            headers = {"Content-Type": content_type, "x-request-id": rid}
            return web.Response(body=PROXY_PAGE, headers=headers)
        completion = self._completion(body, reply, n, rid)
        return web.json_response(completion, headers={"x-request-id": rid})

    def _completion(
        self, body: dict[str, Any], reply: ScriptedReply, n: int, rid: str
    ) -> dict[str, Any]:
        choices = reply.choice_chunks(n)
        thinking = len(reply.reasoning_chunks())
        in_key = reply.reasoning and reply.reasoning_as != "think"
        return completion_body(
            completion_id=f"chatcmpl-{rid[4:]}",
            created=int(time.time()),
            model=self._model(body, reply),
            texts=reply.answer_texts(n),
            finish_reason=reply.finish(),
            prompt_tokens=estimate_prompt_tokens(body),
            completion_tokens=sum(len(chunks) + thinking for chunks in choices)
            + len(choices) * sum(len(call.argument_pieces()) + 1 for call in reply.tool_calls),
            reasoning={reply.reasoning_as: reply.reasoning} if in_key else None,
            tool_calls=tool_call_bodies(reply.tool_calls, _call_ids(reply, rid, 0)),
        )

    async def _complete(
        self, request: web.Request, body: dict[str, Any], reply: ScriptedReply, n: int, rid: str
    ) -> web.StreamResponse:
        choices = reply.choice_chunks(n)
        fault = reply.fault
        if fault is not None and fault.kind is FaultKind.CUT:
            if request.transport is not None:
                request.transport.close()
            return web.Response()  # never reaches the client; aiohttp drops the write
        # A whole completion takes as long as streaming it would have.
        interval = self._interval(reply)
        delay = reply.first_token_delay + interval * max(map(len, choices), default=0)
        if reply.reasoning:
            seconds = reply.reasoning_seconds
            delay += len(reply.reasoning_chunks()) * interval if seconds is None else seconds
        if fault is not None and fault.kind is FaultKind.STALL:
            delay += fault.seconds
        if delay > 0:
            deadline = self._ticker.loop_time() + delay
            if await wait_until(self._ticker, request, deadline) is None:
                if request.transport is not None:
                    request.transport.abort()
                return web.Response()
        if fault is not None and fault.kind is FaultKind.ERROR:
            return web.json_response(status_error_body(500, fault.message), status=500)
        completion = self._completion(body, reply, n, rid)
        return web.json_response(completion, headers={"x-request-id": rid})


def _call_ids(reply: ScriptedReply, rid: str, choice: int) -> list[str]:
    """The id of each call of a choice: the scripted one, or one made from the request's."""
    return [
        call.id if call.id is not None else f"call_{rid[4:]}_{choice}_{k}"
        for k, call in enumerate(reply.tool_calls)
    ]


def _step_interval(seconds: float | None, steps: int) -> float | None:
    """The pace of ``steps`` chunks that take ``seconds`` in all (None: the reply's pace)."""
    if seconds is None or steps == 0:
        return None
    return seconds / steps


async def serve_until_signalled(server: LLMServer) -> None:
    """Serve until SIGINT or SIGTERM; print the address first (benchmarks wait for this line)."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        print(f"llm server listening on {server.base_url}", flush=True)
        await stop.wait()
