"""Decodes the server-sent events of a streamed completion into the bridge's stream events.

This is the hot loop of the LLM side: it runs for every token of every concurrent reply. Lines
are split with one bytes.splitlines per network read and each chunk is decoded with one
json.loads; building the SDK's pydantic chunk objects costs about ten times more CPU per chunk.
The model's text enters the bridge here, so it is cleaned here (`bridge.text.clean_text`).
"""

from __future__ import annotations

import json

from adapters.llm.reasoning import ThinkBlocks
from adapters.llm.tool_calls import ToolCallParts
from adapters.llm.tools import ToolNames
from bridge.domain import TokenUsage
from bridge.ports import Delta, Finished, LLMError, Reasoning, StreamEvent, ToolCalls
from bridge.text import clean_text


class SSELines:
    """Splits a byte stream into SSE lines (ended by CRLF, LF or CR), keeping a partial last line.

    One bytes.splitlines per network read instead of the SDK's text decoding and line decoder,
    which run Python code per character class and per line.
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
    choice that streamed anything (text or reasoning) has its finish_reason. Anything else is a
    body that broke off. Reasoning comes as `delta.reasoning_content` or `delta.reasoning`, or
    inline in the content between `<think>` tags (`ThinkBlocks`, made for a choice the first
    time a "<" shows up in its content). Call `end_events` once the stream is over.

    A choice's `delta.tool_calls` fragments are assembled (`ToolCallParts`, made the first time
    a choice has some) and its calls go out as one `ToolCalls` just before its `Finished`, named
    back with the request's tool `names`.
    """

    __slots__ = ("_written", "_answered", "_finished", "_thinks", "_calls", "_names", "_done")

    def __init__(self, names: ToolNames | None = None) -> None:
        self._written: set[int] = set()
        # Choices whose answer text has begun: a "<think>" after it is the answer's own text.
        self._answered: set[int] = set()
        self._finished: set[int] = set()
        self._thinks: dict[int, ThinkBlocks] | None = None
        self._calls: dict[int, ToolCallParts] | None = None
        self._names = names
        self._done = False

    @property
    def finished(self) -> bool:
        return bool(self._finished) and self._written <= self._finished

    def line_events(self, line: bytes) -> list[StreamEvent] | None:
        """The events of one SSE line; None for the end of the stream (`data: [DONE]`)."""
        if not line.startswith(b"data:"):
            return []  # blank separators, comments (": keep-alive"), event names
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self._done = True
            return None
        return self._events(payload)

    def end_events(self) -> list[StreamEvent]:
        """What is still held back once the stream is over: a "<" that began no think tag, and
        after `[DONE]` the calls of a choice the server never gave a finish_reason (a body that
        broke off mid-call gives none: its arguments may be cut)."""
        events: list[StreamEvent] = []
        if self._thinks:
            for index, blocks in self._thinks.items():
                blocks.end(index, events)
        if self._calls and self._done:
            for index in sorted(self._calls):
                self._add_calls(index, events)
        return events

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
            if content is None or len(delta) > 1:
                # Reasoning rides in a key of its own, beside or instead of the content. Some
                # servers send both names with the same text: one of them is read.
                thought = delta.get("reasoning_content") or delta.get("reasoning")
                if thought and isinstance(thought, str):
                    thought = clean_text(thought)
                    if thought:
                        events.append(Reasoning(index, thought))
                        self._written.add(index)
                # So do tool calls: a plain text delta never gets here.
                fragments = delta.get("tool_calls")
                if fragments:
                    self._tool_parts(index).feed(fragments)
                    self._written.add(index)
            if content and isinstance(content, str):
                content = clean_text(content)
                if content:  # a delta that was only NULs
                    thinks = self._thinks
                    blocks = thinks.get(index) if thinks else None
                    if blocks is None and "<" not in content:
                        events.append(Delta(index, content))
                        if not content.isspace():
                            self._answered.add(index)
                    else:
                        if blocks is None:
                            blocks = self._think_blocks(index)
                        blocks.feed(index, content, events)
                    self._written.add(index)
            reason = choice.get("finish_reason")
            if reason:
                if self._thinks and (blocks := self._thinks.get(index)) is not None:
                    blocks.end(index, events)
                # Some servers finish with "stop" after calls: the calls count all the same.
                if self._calls and index in self._calls:
                    self._add_calls(index, events)
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

    def _tool_parts(self, index: int) -> ToolCallParts:
        if self._calls is None:
            self._calls = {}
        parts = self._calls.get(index)
        if parts is None:
            parts = self._calls[index] = ToolCallParts()
        return parts

    def _add_calls(self, index: int, events: list[StreamEvent]) -> None:
        assert self._calls is not None
        calls = self._calls.pop(index).assembled(self._names)
        if calls:
            events.append(ToolCalls(index, calls))

    def _think_blocks(self, index: int) -> ThinkBlocks:
        if self._thinks is None:
            self._thinks = {}
        blocks = self._thinks[index] = ThinkBlocks(answered=index in self._answered)
        return blocks
