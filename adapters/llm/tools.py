"""Tools on the wire: the function names the API accepts, tool turns as OpenAI messages, and the
models whose endpoint refuses tools.

The core names a tool "server.tool"; the API takes names matching ``^[a-zA-Z0-9_-]{1,64}$``, so
each request carries its own mapping (`ToolNames`) and the model's calls are mapped back with it.
With ``tools`` on every request until an endpoint answers that the model takes none; that model
is then tool-less for the life of the process, and the refused request is sent again without
them (and without the tool turns of its history) so the user still gets an answer.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any

from bridge.domain import Role
from bridge.ports import ChatTurn, ToolSpec

log = logging.getLogger(__name__)

WIRE_NAME_MAX = 64
_NOT_WIRE = re.compile(r"[^A-Za-z0-9_-]")


def wire_name(qualified: str) -> str:
    """The function name the API takes for a qualified tool name: "." becomes "__", any other
    character outside [A-Za-z0-9_-] "_", cut to 64 characters ("docs.search" -> "docs__search").

    Collisions within one request are `ToolNames`' business; the local LLM server computes the
    same names to find the tool a test asks it to call.
    """
    name = _NOT_WIRE.sub("_", qualified.replace(".", "__"))[:WIRE_NAME_MAX]
    return name or "_"


class ToolNames:
    """The wire names of one request's tools, and the qualified name behind each.

    Two tools whose names map alike ("a.b" and "a:b" -> "a__b", "a_b"... or two long names cut
    to the same 64 characters) are told apart by a suffix on the later one: "_2", "_3"...
    """

    __slots__ = ("_wire", "_qualified")

    def __init__(self, tools: Sequence[ToolSpec]) -> None:
        self._wire: dict[str, str] = {}
        self._qualified: dict[str, str] = {}
        for spec in tools:
            if spec.name in self._wire:
                continue  # the same tool twice: one function (the API refuses duplicates)
            base = name = wire_name(spec.name)
            n = 2
            while name in self._qualified:
                suffix = f"_{n}"
                name = base[: WIRE_NAME_MAX - len(suffix)] + suffix
                n += 1
            self._wire[spec.name] = name
            self._qualified[name] = spec.name

    def wire(self, qualified: str) -> str:
        """The wire name of a tool; a name not offered in this request (a call in the history
        to a tool that is gone) gets its plain mapping."""
        return self._wire.get(qualified) or wire_name(qualified)

    def qualified(self, wire: str) -> str:
        """The qualified name behind a name the model called; an unknown one is passed through
        unchanged (the core tells the model that no such tool exists)."""
        return self._qualified.get(wire, wire)


def wire_tools(tools: Sequence[ToolSpec], names: ToolNames) -> list[dict[str, Any]]:
    """The request's `tools` parameter (no `tool_choice`: the model decides, "auto")."""
    seen: set[str] = set()
    functions: list[dict[str, Any]] = []
    for spec in tools:
        if spec.name in seen:
            continue
        seen.add(spec.name)
        function = {
            "name": names.wire(spec.name),
            "description": spec.description,
            "parameters": dict(spec.parameters),
        }
        functions.append({"type": "function", "function": function})
    return functions


def is_tool_turn(turn: ChatTurn) -> bool:
    """A turn that exists only for tools: a result, or an assistant turn that asked for some."""
    return turn.role is Role.TOOL or bool(turn.tool_calls)


def tool_message(turn: ChatTurn, names: ToolNames | None) -> dict[str, Any] | None:
    """A tool turn as an OpenAI message; without `names` (no tools go with the request) the
    turn is left out (None), and of an assistant turn with calls only its text remains."""
    if turn.role is Role.TOOL:
        if names is None:
            return None
        return {"role": "tool", "tool_call_id": turn.tool_call_id, "content": turn.content}
    if names is None:
        return {"role": turn.role.value, "content": turn.content} if turn.content else None
    calls = [
        {
            "id": call.id,
            "type": "function",
            "function": {
                "name": names.wire(call.name),
                "arguments": _json_or_empty(call.arguments),
            },
        }
        for call in turn.tool_calls
    ]
    return {"role": turn.role.value, "content": turn.content or None, "tool_calls": calls}


def _json_or_empty(arguments: str) -> str:
    """The arguments as the model wrote them, or "{}" when they are not JSON: vLLM, Ollama and
    llama.cpp parse the calls of the history and refuse the whole request over one malformed
    call (the tool result that follows already told the model what was wrong with it)."""
    try:
        json.loads(arguments)
    except ValueError:
        return "{}"
    return arguments


# What servers answer (HTTP 400, 404 or 422) when the model, or the server as started, takes no
# tools:
#   vLLM:      '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to
#              be set'
#   Ollama:    "registry.ollama.ai/library/gemma:2b does not support tools"
#   llama.cpp: "tools param requires --jinja flag"
#   OpenAI:    "Unrecognized request argument supplied: tools", "Unsupported parameter: 'tools'
#              is not supported with this model."
#   others:    "tools is not supported", "Function calling is not enabled for this model",
#              "This model does not support tool use" (LM Studio-like), "Tool calling is not
#              supported"...
# Errors about one tool or one call ("Invalid schema for function 'x'", "tool_call_id not
# found", "Invalid 'tools[0].function.name'") are not refusals: another request would do.
_TOOL_WORDS = (
    r"(?:tools?(?:[ _-]?(?:use|usage|calls?|calling))?|function[ _-]?call(?:s|ing)?|functions)"
)
_REFUSAL = re.compile(
    r"--enable-auto-tool-choice"
    r"|tools param requires"
    r"|requires --jinja"
    r"|(?:not|n't|cannot|can't|unable to) (?:support|accept|handle|use|do|perform) (?:the )?"
    + _TOOL_WORDS
    + r"|\W"
    + _TOOL_WORDS
    + r"\W*(?: (?!schema|definition|name|argument|format|type)\w+){0,3}"
    r" (?:is|are) not (?:supported|enabled|available|allowed)"
    r"|(?:unrecognized|unsupported|unknown|unexpected) (?:request )?(?:argument|parameter|field|"
    r"property|key)s?(?: supplied)?\W+tools\b"
    r"|no endpoints found that support tool",
    re.IGNORECASE,
)


def refuses_tools(message: str) -> bool:
    """Whether an endpoint's error message says that the model takes no tools."""
    return _REFUSAL.search(f" {message}") is not None


class ToolPolicy:
    """For one model client: the models whose endpoint refuses tools."""

    def __init__(self) -> None:
        self._tool_less: set[str] = set()

    def offers(self, model: str) -> bool:
        """Whether tools go to `model` (False once it refused them)."""
        return model not in self._tool_less

    def refused(self, model: str, status: int, message: str) -> bool:
        """Whether an HTTP error to a request that carried tools says that `model` takes none;
        the model is then remembered as tool-less (and that is logged, once)."""
        if status not in (400, 404, 422) or not refuses_tools(message):
            return False
        if model not in self._tool_less:
            self._tool_less.add(model)
            log.warning(
                "the model %r does not support tools (%s): its requests go without them from "
                "now on",
                model,
                message[:200],
            )
        return True
