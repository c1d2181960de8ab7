"""The tools benchmark's model: the local LLM server, whose every reply first makes the rounds of
tool calls the plan gives its conversation, then streams that conversation's scripted text.

    python -m bench.tool_llm --tokens 600 --rate 50 --rounds 1,2,3 --tools echo,slow --log l.jsonl

The emulator's own tool directives (`[[tool:...]]`) answer a round's results by quoting them;
here the answer is the same text a reply without tools gets (`bench.reply_text`), so a run with
tools and one without differ only by the tools. One JSON line per request, as
`bench.llm_process` writes it (a conversation's last streamed request is its answer).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TextIO

from aiohttp import web

from adapters.llm.tools import wire_name
from bench.llm_process import timing_middleware
from bench.reply_text import conversation_of, reply_text
from bench.tool_server import SERVER_NAME
from sandbox.llm_server import LLMServer, ScriptedReply
from sandbox.llm_server.script import ScriptedToolCall
from sandbox.llm_server.server import serve_until_signalled

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Plan:
    """What the model does in every conversation: conversation c makes rounds[c % len(rounds)]
    rounds of `calls` parallel calls to tools[(c // len(rounds)) % len(tools)], so every
    len(rounds) * len(tools) conversations in a row hold each combination once."""

    rounds: tuple[int, ...] = (1,)
    tools: tuple[str, ...] = ("slow",)
    calls: int = 2
    seconds: float = 0.2  # slow's sleep

    def of(self, conversation: int) -> tuple[int, str]:
        rounds = self.rounds[conversation % len(self.rounds)]
        tool = self.tools[(conversation // len(self.rounds)) % len(self.tools)]
        return rounds, tool

    def arguments(self, tool: str, conversation: int, round_: int, call: int) -> str:
        if tool == "slow":
            return json.dumps({"seconds": self.seconds})
        return json.dumps({"text": f"conv-{conversation} round {round_} call {call}"})

    def as_args(self) -> list[str]:
        return [
            "--rounds", ",".join(map(str, self.rounds)), "--tools", ",".join(self.tools),
            "--calls", str(self.calls), "--seconds", str(self.seconds),
        ]  # fmt: skip


def rounds_so_far(messages: list[Any]) -> int:
    """The reply's rounds: the assistant turns with tool calls after the last user message."""
    done = 0
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") == "user":
            break
        if message.get("role") == "assistant" and message.get("tool_calls"):
            done += 1
    return done


def answer(plan: Plan, tokens: int, body: dict[str, Any]) -> ScriptedReply:
    conversation = conversation_of(body)
    wanted, tool = plan.of(max(conversation, 0))
    messages = body.get("messages") or []
    done = rounds_so_far(messages)
    offered = bool(body.get("tools")) and body.get("tool_choice") != "none"
    if offered and done < wanted:
        name = wire_name(f"{SERVER_NAME}.{tool}")
        calls = tuple(
            ScriptedToolCall(name, plan.arguments(tool, conversation, done + 1, k))
            for k in range(plan.calls)
        )
        return ScriptedReply(tool_calls=calls)
    return ScriptedReply(text=reply_text(conversation, 0, tokens))


def scripting_middleware(server: LLMServer, plan: Plan, tokens: int) -> Any:
    """Queues the request's answer just before the server's handler takes the next scripted one.

    Nothing awaits in between (the body is already read, and aiohttp keeps it), so concurrent
    requests cannot take each other's answers; the emulator's directives never see the request.
    """

    @web.middleware
    async def script(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != "/v1/chat/completions":
            return await handler(request)
        body = await request.json()
        if server.scripted:
            raise RuntimeError("an earlier request left its scripted answer unconsumed")
        server.script(answer(plan, tokens, body))
        return await handler(request)

    return script


async def serve(args: argparse.Namespace, log: TextIO) -> None:
    plan = Plan(
        rounds=tuple(int(r) for r in args.rounds.split(",")),
        tools=tuple(args.tools.split(",")),
        calls=args.calls,
        seconds=args.seconds,
    )
    server = LLMServer(args.rate, args.tick, port=args.port, record_requests=False)
    server.app.middlewares.append(timing_middleware(log))
    server.app.middlewares.append(scripting_middleware(server, plan, args.tokens))
    await serve_until_signalled(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=600)
    parser.add_argument("--rate", type=float, default=50.0, help="tokens per second per reply")
    parser.add_argument("--tick", type=float, default=0.02)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rounds", default="1", help="rounds per conversation, cycled")
    parser.add_argument("--tools", default="slow", help="echo and/or slow, cycled")
    parser.add_argument("--calls", type=int, default=2, help="parallel calls per round")
    parser.add_argument("--seconds", type=float, default=0.2, help="slow's sleep")
    parser.add_argument("--log", required=True, help="append one JSON line per request here")
    args = parser.parse_args()
    with open(args.log, "a", encoding="utf-8") as log, contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args, log))


if __name__ == "__main__":
    main()
