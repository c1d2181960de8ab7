"""What the local LLM does with tools: calls asked for by directives, the sandbox demo's calls,
and answers made of the tools' results.

It answers before the server's `responder` (a scripted reply still comes first); None leaves
the request to the responder. Directives, in the last user message:

- ``[[tool:NAME {json}]]``: call the offered function whose name is ``wire_name(NAME)`` (NAME
  may be qualified, "server.tool", or a wire name) with that JSON as its arguments, verbatim
  (``{}`` when left out; text that is not JSON goes as it is, up to the ``]]``). Several
  directives: parallel calls in one turn.
- ``[[tool-loop:NAME {json}]]``: call it again on every request that offers tools; a request
  that offers none is answered "stopped after N tool rounds" (N: its tool result messages).

A directive whose tool is not offered is answered with text that says so. Once the last
messages are tool results, the answer quotes each one verbatim ("Tool results:\\n- <result>").
Without directives (the offline sandbox), a request that offers tools and whose last message
asks for the time or date, holds an arithmetic expression ("what is 17*23") or says "search
the docs for X" / "docs: X" calls the tool whose name ends with "now", "calculate" or
"search_docs", then answers with its result.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adapters.llm.tools import wire_name

from .content import message_text
from .script import ScriptedReply, ScriptedToolCall

# What a model whose name holds NO_TOOLS_MODEL answers a request with tools (HTTP 400).
NO_TOOLS_MODEL = "no-tools"
NO_TOOLS_MESSAGE = "tools is not supported by this model"

_DIRECTIVE = re.compile(r"\[\[(tool|tool-loop):")
_NAME = re.compile(r"[^\s\]]+")
_JSON = json.JSONDecoder()


@dataclass(frozen=True, slots=True)
class Directive:
    name: str
    arguments: str
    loop: bool


def directives(text: str) -> list[Directive]:
    """The tool directives of a message, in order."""
    found: list[Directive] = []
    at = 0
    while (match := _DIRECTIVE.search(text, at)) is not None:
        at = match.end()
        name = _NAME.match(text, at)
        if name is None:
            continue
        at = _skip_space(text, name.end())
        if text.startswith("]]", at):
            arguments, at = "{}", at + 2
        else:
            close = text.find("]]", at)
            try:
                _value, end = _JSON.raw_decode(text, at)
            except ValueError:
                end = -1
            after = _skip_space(text, end) if end >= 0 else -1
            if after >= 0 and text.startswith("]]", after):
                arguments, at = text[at:end], after + 2  # JSON, whatever "]]" it holds
            elif close >= 0:
                arguments, at = text[at:close].strip(), close + 2
            else:
                continue  # never closed: no directive
        found.append(Directive(name.group(), arguments, match.group(1) == "tool-loop"))
    return found


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def tool_reply(request: dict[str, Any]) -> ScriptedReply | None:
    """The reply of a tool-calling model, or None when tools play no part in it."""
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    # tool_choice "none": the tools are there (for the results' sake) but may not be called.
    offered = {} if request.get("tool_choice") == "none" else _offered(request)
    last_user = next((m for m in reversed(messages) if _role(m) == "user"), None)
    text = message_text(last_user) if last_user is not None else ""
    found = directives(text) if "[[tool" in text else []
    results = _trailing_results(messages)
    loops = [d for d in found if d.loop]
    if loops:
        if not offered:
            rounds = sum(1 for m in messages if _role(m) == "tool")
            return ScriptedReply(text=f"stopped after {rounds} tool rounds")
        return _calls(loops, offered)
    if results:
        if found:
            return ScriptedReply(text=_results_text(results))
        return ScriptedReply(text=_demo_answer(messages, results))
    if found:
        return _calls(found, offered)
    if offered and _role(messages[-1]) == "user":
        return _demo_call(text, offered)
    return None


def takes_no_tools(request: dict[str, Any]) -> bool:
    """A model named "...no-tools..." takes no tools, as a server without tool support."""
    return bool(request.get("tools")) and NO_TOOLS_MODEL in str(request.get("model") or "")


def _role(message: Any) -> str:
    return str(message.get("role")) if isinstance(message, dict) else ""


def _offered(request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The functions the request offers, by name (the first of a name)."""
    offered: dict[str, dict[str, Any]] = {}
    tools = request.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            offered.setdefault(function["name"], function)
    return offered


def _trailing_results(messages: list[Any]) -> list[dict[str, Any]]:
    """The tool results that end the conversation (the last round's), in order."""
    results: list[dict[str, Any]] = []
    for message in reversed(messages):
        if _role(message) != "tool":
            break
        results.append(message)
    return results[::-1]


def _calls(found: list[Directive], offered: dict[str, dict[str, Any]]) -> ScriptedReply:
    missing = [d.name for d in found if wire_name(d.name) not in offered]
    if missing:
        names = ", ".join(offered) or "none"
        return ScriptedReply(
            text=f"I cannot call {', '.join(missing)}: not offered (offered: {names})."
        )
    calls = tuple(ScriptedToolCall(wire_name(d.name), d.arguments) for d in found)
    return ScriptedReply(tool_calls=calls)


def _results_text(results: list[dict[str, Any]]) -> str:
    return "Tool results:\n" + "\n".join(f"- {message_text(m)}" for m in results)


# --- the offline sandbox's demo ----------------------------------------------------------------

_ASKS_TIME = re.compile(
    r"\bwhat(?:'s| is)?\s+(?:the\s+)?(?:current\s+)?(?:time|date|day)\b"
    r"|\btime is it\b|\b(?:current|today'?s)\s+(?:time|date)\b|\bwhat day\b",
    re.IGNORECASE,
)
_EXPRESSION = re.compile(r"[(\d][\d\s.+\-*/×÷%()]*[\d)]")
_OPERATION = re.compile(r"\d\s*\)*\s*[-+*/×÷%]\s*\(*\s*\d")
_ISO_DATE = re.compile(r"\d{4}-\d\d-\d\d")
_DOCS = re.compile(r"\bsearch\s+(?:the\s+)?docs?\s+for\s+(.+)|\bdocs:\s*(.+)", re.IGNORECASE)


def _demo_call(text: str, offered: dict[str, dict[str, Any]]) -> ScriptedReply | None:
    if (match := _DOCS.search(text)) and (tool := _ending(offered, "search_docs")):
        query = (match.group(1) or match.group(2)).splitlines()[0].strip(" \"'?.!")
        return _demo(offered, tool, "query", query)
    if _ASKS_TIME.search(text) and (tool := _ending(offered, "now")):
        return ScriptedReply(tool_calls=(ScriptedToolCall(tool, "{}"),))
    if (expression := _expression(text)) and (tool := _ending(offered, "calculate")):
        return _demo(offered, tool, "expression", expression)
    return None


def _demo(offered: dict[str, dict[str, Any]], tool: str, default: str, value: str) -> ScriptedReply:
    arguments = json.dumps({_string_parameter(offered[tool], default): value})
    return ScriptedReply(tool_calls=(ScriptedToolCall(tool, arguments),))


def _ending(offered: dict[str, dict[str, Any]], suffix: str) -> str | None:
    """The first offered function named `suffix`, or ending with "_" or "-" and it."""
    for name in offered:
        if name == suffix or name.endswith(("_" + suffix, "-" + suffix)):
            return name
    return None


def _string_parameter(function: dict[str, Any], default: str) -> str:
    """The argument a one-string tool takes: its first required string property, else its
    first string property, else `default`."""
    schema = function.get("parameters")
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict):
        return default
    strings = [
        str(k) for k, v in properties.items() if isinstance(v, dict) and v.get("type") == "string"
    ]
    required = schema.get("required") if isinstance(schema, dict) else None
    for name in strings:
        if isinstance(required, list) and name in required:
            return name
    return strings[0] if strings else default


def _expression(text: str) -> str | None:
    for match in _EXPRESSION.finditer(text):
        candidate = match.group().strip()
        if _OPERATION.search(candidate) and not _ISO_DATE.fullmatch(candidate):
            return candidate.replace("×", "*").replace("÷", "/")
    return None


def _demo_answer(messages: list[Any], results: list[dict[str, Any]]) -> str:
    """An answer that uses each result (quoted verbatim), by the tool that gave it."""
    calls = _calls_by_id(messages)
    answers = []
    for result in results:
        content = message_text(result)
        name, arguments = calls.get(str(result.get("tool_call_id")), ("", ""))
        phrase = next((p for s, p in _PHRASES if name == s or name.endswith("_" + s)), None)
        answers.append(phrase(content, arguments) if phrase else f"- {content}")
    if all(a.startswith("- ") for a in answers):
        return "Tool results:\n" + "\n".join(answers)
    return "\n\n".join(answers)


def _calls_by_id(messages: list[Any]) -> dict[str, tuple[str, str]]:
    calls: dict[str, tuple[str, str]] = {}
    for message in messages:
        tool_calls = message.get("tool_calls") if isinstance(message, dict) else None
        for call in tool_calls if isinstance(tool_calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                name, arguments = function.get("name"), function.get("arguments")
                calls[str(call.get("id"))] = (str(name or ""), str(arguments or ""))
    return calls


def _first_value(arguments: str) -> str:
    try:
        value = json.loads(arguments)
    except ValueError:
        return ""
    if isinstance(value, dict) and value:
        return str(next(iter(value.values())))
    return ""


def _equation(result: str, expression: str) -> str:
    # The sandbox's calculator answers "17*23 = 391" itself.
    if "=" in result or not expression:
        return result
    return f"{expression} = {result}"


_PHRASES: tuple[tuple[str, Callable[[str, str], str]], ...] = (
    ("now", lambda result, _args: f"It is now {result}."),
    ("calculate", lambda result, args: _equation(result, _first_value(args))),
    ("search_docs", lambda result, _args: f"Here is what the docs say:\n\n{result}"),
)
