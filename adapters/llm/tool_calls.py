"""Assembles the streamed `delta.tool_calls` fragments of one choice into whole calls.

OpenAI sends a call's index, id and function name first, then its `arguments` in fragments to
concatenate, call after call, each with its own index. Servers vary: some send a whole call in
one chunk, some repeat the id and the name in every fragment, some leave out the index or give
every call index 0 (each with its own id), some leave out the id. The decoder
(`adapters.llm.sse`) hands fragments here only when a chunk has some.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from adapters.llm.tools import ToolNames
from bridge.ports import LLMError, ToolCall

# One call's arguments past this are no tool call but a runaway (or hostile) stream: stop it
# rather than hold it all in memory.
MAX_ARGUMENTS_CHARS = 1_000_000

# Ids for calls that came without one, unique in the process: the tool loop answers each call
# by its id, and the calls of every round stay in the chat's history.
_generated_ids = itertools.count(1)


class _PendingCall:
    __slots__ = ("id", "name", "pieces", "size")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.pieces: list[str] = []
        self.size = 0


class ToolCallParts:
    """The calls of one choice, as far as their fragments have come."""

    __slots__ = ("_calls", "_by_index")

    def __init__(self) -> None:
        self._calls: list[_PendingCall] = []
        self._by_index: dict[int, _PendingCall] = {}

    def feed(self, fragments: Any) -> None:
        """Add one delta's `tool_calls` (a list of fragments)."""
        if not isinstance(fragments, list):
            raise LLMError(f"malformed tool_calls in the stream: {fragments!r:.80}", retryable=True)
        for fragment in fragments:
            if isinstance(fragment, dict):
                self._add(fragment)

    def _add(self, fragment: dict[str, Any]) -> None:
        index = fragment.get("index")
        call_id = fragment.get("id")
        call_id = call_id if isinstance(call_id, str) else ""
        if isinstance(index, int):
            call = self._by_index.get(index)
        else:  # no index: the fragment continues the last call, unless it brings a new id
            call = self._calls[-1] if self._calls else None
        if call is None or (call_id and call.id and call_id != call.id):
            # A new call; under an index already used, a different id also means a new call
            # (servers that number every call 0).
            call = _PendingCall()
            self._calls.append(call)
            if isinstance(index, int):
                self._by_index[index] = call
        if call_id and not call.id:
            call.id = call_id
        function = fragment.get("function")
        if not isinstance(function, dict):
            return
        name = function.get("name")
        if name and isinstance(name, str) and not call.name:
            call.name = name  # a repeat of the name in a later fragment is not appended
        arguments = function.get("arguments")
        if not arguments:
            return
        if not isinstance(arguments, str):  # an object instead of its JSON text
            arguments = json.dumps(arguments, ensure_ascii=False)
        call.size += len(arguments)
        if call.size > MAX_ARGUMENTS_CHARS:
            raise LLMError(
                f"the model's call of {call.name or 'a tool'!r} has more than "
                f"{MAX_ARGUMENTS_CHARS:,} characters of arguments",
                retryable=False,
            )
        call.pieces.append(arguments)

    def assembled(self, names: ToolNames | None) -> tuple[ToolCall, ...]:
        """The whole calls, named back to the qualified names of the request's tools; a call
        without an id (or with the id of an earlier call of the turn) gets a new one, a call
        without arguments gets "{}" (what OpenAI sends for a tool that takes none)."""
        calls: list[ToolCall] = []
        seen: set[str] = set()
        for call in self._calls:
            if not call.name and not call.pieces:
                continue  # a fragment that named nothing (an id alone): no call to answer
            call_id = call.id
            if not call_id or call_id in seen:
                call_id = f"call_{next(_generated_ids)}"
            seen.add(call_id)
            name = names.qualified(call.name) if names is not None else call.name
            calls.append(ToolCall(call_id, name, "".join(call.pieces) or "{}"))
        return tuple(calls)
