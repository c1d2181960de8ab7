"""Runs the local LLM server as its own process (for the benchmarks) until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from .script import REASONING_FORMS, lorem_responder, reasoning_responder
from .server import LLMServer, serve_until_signalled


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.llm_server", description="Local OpenAI-compatible LLM server."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001, help="0 picks a free port")
    parser.add_argument(
        "--tokens-per-second", type=float, default=None, help="stream pace (default: unpaced)"
    )
    parser.add_argument(
        "--reply-tokens",
        type=int,
        default=None,
        help="answer every request with this many lorem tokens (default: echo the user)",
    )
    parser.add_argument("--tick", type=float, default=0.02, help="pacing granularity, seconds")
    parser.add_argument(
        "--reasoning-seconds",
        type=float,
        default=None,
        help="reason this long before every answer (a reasoning model)",
    )
    parser.add_argument(
        "--reasoning-as",
        choices=REASONING_FORMS,
        default="reasoning_content",
        help="how the reasoning streams: its own delta key or <think> tags in the content",
    )
    parser.add_argument(
        "--no-vision", action="store_true", help="refuse image parts (HTTP 400, as OpenAI does)"
    )
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    server = LLMServer(
        args.tokens_per_second,
        args.tick,
        host=args.host,
        port=args.port,
        # Nobody can read the recorded bodies of a separate process; do not let them pile up.
        record_requests=False,
        vision=not args.no_vision,
    )
    if args.reply_tokens is not None:
        server.responder = lorem_responder(args.reply_tokens)
    if args.reasoning_seconds is not None:
        server.responder = reasoning_responder(
            server.responder,
            seconds=args.reasoning_seconds,
            form=args.reasoning_as,
        )
    await serve_until_signalled(server)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
