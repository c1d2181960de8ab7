"""The tool rounds of one reply: which tools are offered, running the calls the model asks for
(in parallel, each within its server's timeout), and what goes back to the model.

A tool's result is untrusted text: it is capped (`mcp.max_result_chars`) and the config's
secrets are cut out of it (and out of the arguments) before the model, the store or a log sees
it. The model is always told what happened: a failed, refused or timed-out call is a result too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from bridge.domain import Role
from bridge.ports import (
    ChatTurn,
    CompletionRequest,
    ToolActivity,
    ToolBox,
    ToolCall,
    ToolFailed,
    ToolOutcome,
    ToolSpec,
)
from bridge.redaction import Redactor

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ToolLoopSettings:
    max_rounds: int = 5
    max_result_chars: int = 20_000
    footer: str = "🔧 _Used {tools}_"


class Tools:
    """Per process: the toolbox, the limits and the secrets; makes a `ToolRounds` per reply."""

    def __init__(
        self,
        toolbox: ToolBox | None,
        settings: ToolLoopSettings,
        redactor: Redactor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.toolbox = toolbox
        self.settings = settings
        self.redactor = redactor or Redactor(())
        self.clock = clock

    def for_reply(
        self,
        selection: Sequence[str],
        *,
        choices: int,
        show: Callable[[Sequence[ToolActivity]], Awaitable[None]],
        settle: Callable[[Sequence[ToolActivity]], None] | None = None,
        where: Mapping[str, object],
    ) -> ToolRounds | None:
        """The tool rounds of a reply offered `selection`; None when it gets no tools (none
        selected or up, no rounds allowed, or several choices: each would call its own)."""
        if self.toolbox is None or not selection or self.settings.max_rounds <= 0 or choices != 1:
            return None
        specs = self.toolbox.available(selection)
        if not specs:
            return None
        return ToolRounds(self, specs, show=show, settle=settle, where=where)


@dataclass(slots=True)
class _Running:
    call: ToolCall
    outcome: ToolOutcome | None = None


@dataclass(slots=True)
class ToolRounds:
    """One reply's tool calls, round after round."""

    tools: Tools
    specs: tuple[ToolSpec, ...]
    show: Callable[[Sequence[ToolActivity]], Awaitable[None]]
    # Told (with no await) how the calls stand when a round is cut short (Stop, a time limit, a
    # shutdown): those still running show as stopped, never as running for ever.
    settle: Callable[[Sequence[ToolActivity]], None] | None
    where: Mapping[str, object]
    rounds: int = 0
    used: list[str] = field(default_factory=list)  # qualified names, first use first
    activity: list[ToolActivity] = field(default_factory=list)
    # Seconds per round spent outside the tools themselves: from the model's calls to the next
    # request, less the slowest call (parsing, capping, redacting, progress, storing the round).
    overheads: list[float] = field(default_factory=list)
    slowest: float = 0.0  # the last round's slowest call, in seconds
    # (tool, outcome) per call, for the metrics: ok, error, timeout or refused.
    outcomes: list[tuple[str, str]] = field(default_factory=list)
    # Tokens of the context the rounds may still fill (`room_for`); the model's answer needs
    # some of it too.
    room: int = 0

    @property
    def choice(self) -> Literal["auto", "none"]:
        """The next request's `tool_choice`: "none" once the rounds are used up or the context
        is nearly full, so that the model answers with what it has (the tools still go with
        it: the results of its calls are only sent along with them)."""
        if self.rounds >= self.tools.settings.max_rounds or self.room < MIN_ROOM:
            return "none"
        return "auto"

    def room_for(self, budget: int, prompt: int, estimate: Callable[[str], int]) -> None:
        """The context's `budget` (tokens) less the first request's `prompt` and the tools'
        definitions: what the rounds' calls and results may take."""
        specs = sum(
            estimate(f"{s.name} {s.description} {json.dumps(s.parameters)}") for s in self.specs
        )
        self.room = budget - prompt - specs

    def fit(
        self, text: str, outcomes: Sequence[ToolOutcome], estimate: Callable[[str], int]
    ) -> tuple[list[ToolOutcome], int]:
        """The round as it can go to the model: results cut to share the room left (with a
        note saying so); and the tokens it takes, which the room loses."""
        calls = estimate(text) + sum(
            estimate(f"{o.call.name} {o.call.arguments}") for o in outcomes
        )
        costs = [estimate(o.content) for o in outcomes]
        available = self.room - calls
        fitted = list(outcomes)
        if outcomes and sum(costs) > available:
            share = max(available // len(outcomes), 0)
            fitted = [
                o if cost <= share else replace(o, content=_cut(o.content, cost, share))
                for o, cost in zip(outcomes, costs, strict=True)
            ]
            costs = [estimate(o.content) for o in fitted]
            log.info("tool results cut to fit the context (%d tokens left)", available,
                     extra=self.where)  # fmt: skip
        used = calls + sum(costs)
        self.room -= used
        return fitted, used

    async def run(self, calls: Sequence[ToolCall]) -> list[ToolOutcome]:
        """Run one round's calls (in parallel); every call gets an outcome, in call order."""
        self.rounds += 1
        names = {spec.name for spec in self.specs}
        running = [_Running(call) for call in calls]
        for item in running:
            if item.call.name in names and item.call.name not in self.used:
                self.used.append(item.call.name)
        base = len(self.activity)
        # Ids of the round and the call's place in it: endpoints that number their calls
        # "call_0" in every turn would otherwise make a later round's card replace an earlier.
        self.activity.extend(
            ToolActivity(f"tool-{self.rounds}-{i}", item.call.name, "in_progress")
            for i, item in enumerate(running)
        )
        try:
            await self.show(tuple(self.activity))
            # The calls run side by side: the round's own cost is its time beyond the slowest.
            self.slowest = await self._run_all(running, names, base)
        except BaseException:
            self._stopped()
            raise
        return [item.outcome for item in running if item.outcome is not None]

    def _stopped(self) -> None:
        self.activity = [
            replace(a, status="error", detail="stopped") if a.status == "in_progress" else a
            for a in self.activity
        ]
        if self.settle is not None:
            try:
                self.settle(tuple(self.activity))
            except Exception as exc:  # cosmetic, and the round is ending anyway
                log.warning("could not show the tools as stopped: %s", exc, extra=self.where)

    async def _run_all(self, running: list[_Running], names: set[str], base: int) -> float:
        clock = self.tools.clock

        async def one(index: int, item: _Running) -> float:
            started = clock()
            outcome = await self._outcome(item.call, names)
            seconds = clock() - started
            item.outcome = replace(outcome, seconds=round(seconds, 3))
            status: Literal["complete", "error"] = "error" if outcome.error else "complete"
            detail = _first_line(outcome.content) if outcome.error else f"{seconds:.1f} s"
            self.activity[base + index] = replace(
                self.activity[base + index], status=status, detail=detail
            )
            await self.show(tuple(self.activity))
            return seconds

        # A task group: if one call fails or the round is cut, the others are cancelled with it.
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(i, item)) for i, item in enumerate(running)]
        return max((task.result() for task in tasks), default=0.0)

    async def _outcome(self, call: ToolCall, names: set[str]) -> ToolOutcome:
        content, kind = await self._attempt(call, names)
        if kind == "refused" and call.name in names:
            # Arguments no tool could take go back (and into the history) as "{}": endpoints
            # refuse a request whose history holds a call with malformed arguments.
            call = replace(call, arguments="{}")
        self.outcomes.append((call.name if call.name in names else "unknown", kind))
        settings = self.tools.settings
        content = self.tools.redactor.redact(content)
        if len(content) > settings.max_result_chars:
            kept = settings.max_result_chars
            content = (
                f"{content[:kept]}\n[cut: the result had {len(content):,} characters; "
                f"the first {kept:,} are shown]"
            )
        return ToolOutcome(call, content, error=kind != "ok")

    async def _attempt(self, call: ToolCall, names: set[str]) -> tuple[str, str]:
        """The result's text and how the call went: ok, error, timeout or refused."""
        if call.name not in names:
            offered = ", ".join(sorted(names))
            return f"Error: no tool named {call.name!r} is offered here (offered: {offered})", (
                "refused"
            )
        redactor = self.tools.redactor
        try:
            arguments = json.loads(call.arguments) if call.arguments.strip() else {}
            if not isinstance(arguments, dict):
                return "Error: the arguments must be a JSON object; call it again", "refused"
            arguments = redactor.redact_json(arguments)
        except ValueError as exc:
            return f"Error: the arguments are not valid JSON ({exc}); call it again", "refused"
        except RecursionError:
            return "Error: the arguments are nested too deeply; call it again", "refused"
        log.info("tool %s called (%d bytes of arguments)", call.name, len(call.arguments),
                 extra=self.where)  # fmt: skip
        toolbox = self.tools.toolbox
        assert toolbox is not None  # a reply gets rounds only with a toolbox
        try:
            return await toolbox.call(call.name, arguments), "ok"
        except ToolFailed as exc:
            log.info("tool %s failed: %s", call.name, redactor.redact(str(exc))[:300],
                     extra=self.where)  # fmt: skip
            return f"Error: {exc}", "timeout" if exc.timed_out else "error"
        except Exception as exc:  # a broken adapter must not end the reply
            log.exception("tool %s raised", call.name, extra=self.where)
            return f"Error: the tool could not be run ({type(exc).__name__})", "error"

    def round_took(self, seconds: float) -> None:
        """The whole round (calls to next request) took this long: its overhead is kept."""
        self.overheads.append(max(seconds - self.slowest, 0.0))

    def next_request(
        self, request: CompletionRequest, text: str, outcomes: Sequence[ToolOutcome]
    ) -> CompletionRequest:
        """The request after a round: the assistant's calls (with the text it wrote before
        them), each result, and the tools still offered."""
        calls = tuple(outcome.call for outcome in outcomes)
        turns = [
            *request.messages,
            ChatTurn(Role.ASSISTANT, text, tool_calls=calls),
            *(ChatTurn(Role.TOOL, o.content, tool_call_id=o.call.id) for o in outcomes),
        ]
        return replace(request, messages=turns, tool_choice=self.choice)

    def footer(self) -> str:
        """What goes under the reply: which tools it used ("" when none, or no footer)."""
        template = self.tools.settings.footer
        if not self.used or not template:
            return ""
        return template.format(tools=", ".join(f"`{name}`" for name in self.used))

    def metadata(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "used": list(self.used),
            "calls": [list(pair) for pair in self.outcomes],
            "overhead_ms": [round(s * 1000, 2) for s in self.overheads],
        }


def without_footer(content: str, metadata: Mapping[str, Any]) -> str:
    """A stored reply's content as context: the "used tools" footer (for people) left out."""
    tools = metadata.get("tools")
    chars = tools.get("footer_chars") if isinstance(tools, dict) else None
    if isinstance(chars, int) and 0 < chars <= len(content):
        return content[:-chars].rstrip()
    return content


# Below this many tokens of room the model gets no more tools: it answers with what it has.
MIN_ROOM = 512


def _cut(content: str, cost: int, tokens: int) -> str:
    """`content` cut to about `tokens` (of its estimated `cost`), with a note saying so."""
    keep = max(len(content) * tokens // max(cost, 1) - 80, 0)
    note = (
        f"[cut: the result had {len(content):,} characters; the conversation has room for "
        f"the first {keep:,}]"
    )
    return f"{content[:keep]}\n{note}" if keep else note


def status_line(activity: Sequence[ToolActivity], seconds: float) -> str:
    """The status a platform without task cards shows while tools run."""
    running = [a.title for a in activity if a.status == "in_progress"]
    if not running:
        return ""
    names = ", ".join(f"`{name}`" for name in dict.fromkeys(running))
    elapsed = f" {int(seconds)} s" if seconds >= 1 else ""
    return f"🔧 _Using {names}…_{elapsed}"


def _first_line(text: str) -> str:
    line = text.removeprefix("Error: ").strip().splitlines()[0] if text.strip() else ""
    return line[:200]
