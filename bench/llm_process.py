"""The local LLM server as its own process for the platform benchmarks, with a timing log.

    python -m bench.llm_process --tokens 600 --rate 50 --log llm.jsonl

Each conversation gets its own scripted reply (`bench.reply_text`). One JSON line per request
says when the server took it (`received`: the first chunk follows in the same handler run, with
no first-token delay) and when its handler returned after writing `[DONE]` (`done`), both on
`time.monotonic()`, the clock the emulators use, so the harness can line them up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from aiohttp import web

from bench.reply_text import conversation_of, reply_text
from sandbox.llm_server import LLMServer, ScriptedReply
from sandbox.llm_server.server import serve_until_signalled

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def timing_middleware(log: TextIO) -> Any:
    @web.middleware
    async def timing(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != "/v1/chat/completions":
            return await handler(request)
        try:
            # aiohttp keeps the body, so the server's own handler reads it again for free.
            body = await request.json()
        except ValueError:
            return await handler(request)
        received = time.monotonic()
        response = await handler(request)
        entry = {
            "conversation": conversation_of(body),
            "n": body.get("n") or 1,
            "stream": bool(body.get("stream")),
            "received": received,
            "done": time.monotonic(),
        }
        log.write(json.dumps(entry) + "\n")
        log.flush()
        return response

    return timing


def responder(tokens: int) -> Callable[[dict[str, Any]], ScriptedReply]:
    def reply(body: dict[str, Any]) -> ScriptedReply:
        conversation = conversation_of(body)
        n = body.get("n") or 1
        return ScriptedReply(text=[reply_text(conversation, c, tokens) for c in range(n)])

    return reply


async def serve(args: argparse.Namespace, log: TextIO) -> None:
    server = LLMServer(args.rate, args.tick, port=args.port, record_requests=False)
    server.responder = responder(args.tokens)
    server.app.middlewares.append(timing_middleware(log))
    await serve_until_signalled(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=600)
    parser.add_argument("--rate", type=float, default=50.0, help="tokens per second per reply")
    parser.add_argument("--tick", type=float, default=0.02)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", required=True, help="append one JSON line per request here")
    args = parser.parse_args()
    with open(args.log, "a", encoding="utf-8") as log, contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args, log))


if __name__ == "__main__":
    main()
