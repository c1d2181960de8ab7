"""OpenAI's chat-completions wire format: SSE chunk events, completions and error bodies.

Chunk events are byte templates filled per stream, so the hot path escapes only the content.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any

from .script import Fault, ScriptedToolCall

DONE_EVENT = b"data: [DONE]\n\n"


def _dumps(value: Any) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate: escaped, as a real server sends it
        return json.dumps(value, separators=(",", ":")).encode()


def usage_body(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class ChunkEvents:
    """The ``data: {chat.completion.chunk}`` events of one stream, from precomputed bytes."""

    __slots__ = (
        "_heads",
        "_not_finished",
        "_content_heads",
        "_reasoning_heads",
        "_content_tail",
        "_roles",
        "_finishes",
        "_envelope",
    )

    def __init__(
        self,
        *,
        completion_id: str,
        created: int,
        model: str,
        n_choices: int,
        finish_reason: str,
        include_usage: bool,
        reasoning_key: str = "reasoning_content",
    ) -> None:
        envelope = (
            b'data: {"id":' + _dumps(completion_id) + b',"object":"chat.completion.chunk",'
            b'"created":' + str(created).encode() + b',"model":' + _dumps(model) + b',"choices":'
        )
        # OpenAI adds "usage":null to every chunk once include_usage is on; clients see the same.
        tail = b'}],"usage":null}\n\n' if include_usage else b"}]}\n\n"
        choice = [envelope + b'[{"index":' + str(i).encode() for i in range(n_choices)]
        not_finished = b',"logprobs":null,"finish_reason":null' + tail
        self._envelope = envelope
        self._heads = choice
        self._not_finished = not_finished
        self._content_heads = [head + b',"delta":{"content":' for head in choice]
        # DeepSeek sends reasoning beside a null content; newer vLLM sends the key alone.
        if reasoning_key == "reasoning_content":
            reasoning = b'"content":null,"reasoning_content":'
        else:
            reasoning = b'"' + reasoning_key.encode() + b'":'
        self._reasoning_heads = [head + b',"delta":{' + reasoning for head in choice]
        self._content_tail = b"}" + not_finished
        self._roles = [
            head + b',"delta":{"role":"assistant","content":""}' + not_finished for head in choice
        ]
        self._finishes = [
            head + b',"delta":{},"logprobs":null,"finish_reason":' + _dumps(finish_reason) + tail
            for head in choice
        ]

    def add_content(self, out: list[bytes], index: int, text: str) -> None:
        """Append the event for one content delta; parts are joined once per write."""
        # Inline, not through _add_text: this runs for every token the server streams.
        out.append(self._content_heads[index])
        try:
            out.append(encode_basestring(text).encode())
        except UnicodeEncodeError:
            # A lone surrogate has no UTF-8 form; a real server sends it as a \ud800 escape.
            out.append(encode_basestring_ascii(text).encode())
        out.append(self._content_tail)

    def add_reasoning(self, out: list[bytes], index: int, text: str) -> None:
        """Append the event for one reasoning delta (its own key, not the content)."""
        out.append(self._reasoning_heads[index])
        self._add_text(out, text)

    def _add_text(self, out: list[bytes], text: str) -> None:
        try:
            out.append(encode_basestring(text).encode())
        except UnicodeEncodeError:
            # A lone surrogate has no UTF-8 form; a real server sends it as a \ud800 escape.
            out.append(encode_basestring_ascii(text).encode())
        out.append(self._content_tail)

    def tool_calls(
        self, index: int, calls: tuple[ScriptedToolCall, ...], ids: list[str]
    ) -> list[bytes]:
        """The events of choice ``index``'s calls (``ids``: the id each one goes with, "" for
        none): per call a head (index, id, type, name and empty arguments), then the argument
        pieces, as OpenAI streams them; not the hot path, so built with json."""
        out = []
        for position, (call, call_id) in enumerate(zip(calls, ids, strict=True)):
            head: dict[str, Any] = {"index": position}
            if call_id:
                head["id"] = call_id
            head["type"] = "function"
            if call.whole:
                function = {"name": call.name, "arguments": call.arguments}
                out.append(self._tool_delta(index, {**head, "function": function}))
                continue
            out.append(
                self._tool_delta(index, {**head, "function": {"name": call.name, "arguments": ""}})
            )
            for piece in call.argument_pieces():
                if call.repeat_head:
                    fragment = {**head, "function": {"name": call.name, "arguments": piece}}
                else:
                    fragment = {"index": position, "function": {"arguments": piece}}
                out.append(self._tool_delta(index, fragment))
        return out

    def _tool_delta(self, index: int, fragment: dict[str, Any]) -> bytes:
        delta = b'{"tool_calls":[' + _dumps(fragment) + b"]}"
        return self._heads[index] + b',"delta":' + delta + self._not_finished

    def role(self, index: int) -> bytes:
        return self._roles[index]

    def finish(self, index: int) -> bytes:
        return self._finishes[index]

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        usage = _dumps(usage_body(prompt_tokens, completion_tokens))
        return self._envelope + b'[],"usage":' + usage + b"}\n\n"


def error_body(
    message: str, *, error_type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def status_error_body(status: int, message: str) -> dict[str, Any]:
    """The body OpenAI sends with an HTTP error of this status."""
    if status == 429:
        return error_body(message, error_type="requests", code="rate_limit_exceeded")
    if status >= 500:
        return error_body(message, error_type="server_error")
    return error_body(message, error_type="invalid_request_error")


def error_event(message: str) -> bytes:
    """A mid-stream error: the SDK raises ``APIError`` when it parses this event."""
    return b"data: " + _dumps(error_body(message, error_type="server_error")) + b"\n\n"


def fault_headers(fault: Fault) -> dict[str, str]:
    if fault.retry_after is None:
        return {}
    seconds = fault.retry_after
    return {"retry-after": str(int(seconds)) if seconds == int(seconds) else repr(seconds)}


def completion_body(
    *,
    completion_id: str,
    created: int,
    model: str,
    texts: list[str],
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
    reasoning: dict[str, str] | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A non-streamed ``chat.completion``; ``reasoning``: extra keys of each message, such as
    ``{"reasoning_content": ...}``; ``tool_calls``: the calls of every message (its content is
    then null when it has no text)."""
    calls = {"tool_calls": tool_calls} if tool_calls else {}
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {
                    "role": "assistant",
                    "content": text if text or not calls else None,
                    "refusal": None,
                    **(reasoning or {}),
                    **calls,
                },
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            for i, text in enumerate(texts)
        ],
        "usage": usage_body(prompt_tokens, completion_tokens),
    }


def tool_call_bodies(calls: tuple[ScriptedToolCall, ...], ids: list[str]) -> list[dict[str, Any]]:
    """The calls of a non-streamed completion's message."""
    bodies = []
    for call, call_id in zip(calls, ids, strict=True):
        body: dict[str, Any] = {"id": call_id} if call_id else {}
        body["type"] = "function"
        body["function"] = {"name": call.name, "arguments": call.arguments}
        bodies.append(body)
    return bodies


# What a proxy or a login wall in front of the model answers: a page, not the API.
PROXY_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n"
    b'<body><h1>Sign in to continue</h1><form action="/login" method="post">'
    b'<input name="user"><input name="password" type="password"></form></body></html>\n'
)


def models_body(models: list[str], created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": created, "owned_by": "chat-bridge-sandbox"}
            for m in models
        ],
    }
