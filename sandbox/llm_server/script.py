"""What the local LLM answers: scripted replies, injected faults and the default responders.

Pure data and pure functions; the HTTP side lives in ``server`` and ``stream``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from typing import Any, Literal

# Re-exported: the sandbox and the benchmarks read them here.
from .content import estimate_prompt_tokens as estimate_prompt_tokens
from .content import message_text as message_text


class FaultKind(Enum):
    STATUS = "status"
    CUT = "cut"
    STALL = "stall"
    ERROR = "error"
    END = "end"
    NOT_A_STREAM = "not_a_stream"


_DEFAULT_STATUS_MESSAGES = {
    400: "Invalid request.",
    401: "Incorrect API key provided.",
    404: "The model does not exist.",
    429: "Rate limit reached for requests. Please try again later.",
    500: "The server had an error while processing your request.",
    502: "Bad gateway.",
    503: "The engine is currently overloaded, please try again later.",
}


@dataclass(frozen=True, slots=True)
class Fault:
    """A failure to inject into one reply; build it with the classmethods."""

    kind: FaultKind
    status_code: int = 0
    retry_after: float | None = None
    message: str = ""
    after_chunks: int = 0
    seconds: float = 0.0
    content_type: str = ""

    @classmethod
    def status(cls, code: int, retry_after: float | None = None, message: str = "") -> Fault:
        """Answer with HTTP ``code`` and an OpenAI-shaped error body before any streaming."""
        return cls(
            FaultKind.STATUS,
            status_code=code,
            retry_after=retry_after,
            message=message or _DEFAULT_STATUS_MESSAGES.get(code, f"HTTP {code}"),
        )

    @classmethod
    def cut_after(cls, n_chunks: int) -> Fault:
        """Close the connection after ``n_chunks`` chunks, mid-body, with no ``[DONE]``."""
        return cls(FaultKind.CUT, after_chunks=_non_negative(n_chunks))

    @classmethod
    def stall_after(cls, n_chunks: int, seconds: float) -> Fault:
        """Go silent for ``seconds`` after ``n_chunks`` chunks; ``inf``: until the client leaves."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        return cls(FaultKind.STALL, after_chunks=_non_negative(n_chunks), seconds=seconds)

    @classmethod
    def error_after(
        cls, n_chunks: int, message: str = "The server had an error while processing your request."
    ) -> Fault:
        """Send an ``{"error": ...}`` event after ``n_chunks`` chunks and end the stream."""
        return cls(FaultKind.ERROR, after_chunks=_non_negative(n_chunks), message=message)

    @classmethod
    def end_after(cls, n_chunks: int) -> Fault:
        """End the body cleanly after ``n_chunks`` chunks, with no finish_reason, usage or [DONE].

        Unlike ``cut_after`` the HTTP body is complete, so the client sees an ordinary end of
        stream: a server or proxy that gives up mid-reply and still closes the body properly.
        """
        return cls(FaultKind.END, after_chunks=_non_negative(n_chunks))

    @classmethod
    def not_a_stream(cls, content_type: str = "application/json") -> Fault:
        """Answer a stream request with 200 and a whole body instead of SSE.

        ``application/json`` gets the reply as a plain ``chat.completion`` (a server that ignores
        ``stream``); any other type gets a small HTML page, as from a proxy or a login wall.
        """
        return cls(FaultKind.NOT_A_STREAM, content_type=content_type)


def _non_negative(n: int) -> int:
    if n < 0:
        raise ValueError("n_chunks must be >= 0")
    return n


@dataclass(frozen=True, slots=True)
class ScriptedToolCall:
    """One function call of a scripted reply, streamed as OpenAI does: a first fragment with the
    call's index, id, type and name (and empty arguments), then the arguments in pieces.

    ``name`` is the function name as the request offered it (its wire name). ``id`` None: the
    server makes one (``call_...``); ``""``: the call goes without an id, as some servers send
    it. ``fragments`` replaces the automatic cutting of ``arguments`` (about a token a piece).
    ``whole`` sends the whole call in one chunk; ``repeat_head`` repeats the id and the name in
    every fragment; both as some servers do.
    """

    name: str
    arguments: str = "{}"
    id: str | None = None
    fragments: tuple[str, ...] | None = None
    whole: bool = False
    repeat_head: bool = False

    def __post_init__(self) -> None:
        if self.fragments is not None and "".join(self.fragments) != self.arguments:
            raise ValueError("fragments must join to arguments")

    def argument_pieces(self) -> list[str]:
        if self.fragments is not None:
            return list(self.fragments)
        return split_tokens(self.arguments)


ReasoningForm = Literal["reasoning_content", "reasoning", "think"]
REASONING_FORMS: tuple[ReasoningForm, ...] = ("reasoning_content", "reasoning", "think")


@dataclass(slots=True)
class ScriptedReply:
    """One answer of the local LLM.

    ``text`` is a list to give each choice its own text (requests with ``n`` > 1); ``chunks``
    replaces the automatic chunking and is then the content of every choice. Text may hold NUL
    characters and lone surrogates: they go out as ``\\u0000`` and ``\\ud800`` JSON escapes.
    ``send_done=False`` ends the stream after the finish reasons and usage without ``[DONE]``,
    as some servers do.

    ``reasoning`` makes a reasoning model of it: that text streams first, as
    ``delta.reasoning_content`` (DeepSeek, vLLM's reasoning parsers), ``delta.reasoning``
    (newer vLLM, OpenRouter) or inline ``<think>`` tags in the content (a local model without a
    reasoning parser), as ``reasoning_as`` says, for ``reasoning_seconds`` (default: at the
    reply's pace), then the answer. Faults count reasoning chunks as chunks.

    ``tool_calls`` makes every choice call those tools after its text (if any), one call after
    the other, each fragment a chunk (faults count them); the finish reason is then
    ``"tool_calls"`` unless ``finish_reason`` says otherwise (default: ``"stop"``).
    """

    text: str | list[str] = ""
    chunks: list[str] | None = None
    tokens_per_second: float | None = None
    first_token_delay: float = 0.0
    fault: Fault | None = None
    model: str | None = None
    finish_reason: str | None = None
    send_done: bool = True
    reasoning: str = ""
    reasoning_as: ReasoningForm = "reasoning_content"
    reasoning_seconds: float | None = None
    tool_calls: tuple[ScriptedToolCall, ...] = ()

    def __post_init__(self) -> None:
        if self.chunks is not None and isinstance(self.text, str) and self.text:
            if "".join(self.chunks) != self.text:
                raise ValueError("chunks must join to text (or leave text empty)")
        if self.tokens_per_second is not None and self.tokens_per_second <= 0:
            raise ValueError("tokens_per_second must be > 0 (None means as fast as possible)")
        if self.first_token_delay < 0:
            raise ValueError("first_token_delay must be >= 0")
        if self.reasoning_as not in REASONING_FORMS:
            raise ValueError(f"reasoning_as must be one of {', '.join(REASONING_FORMS)}")
        if self.reasoning_seconds is not None and self.reasoning_seconds < 0:
            raise ValueError("reasoning_seconds must be >= 0 (None means at the reply's pace)")
        self.tool_calls = tuple(self.tool_calls)

    def finish(self) -> str:
        """The finish reason every choice ends with."""
        if self.finish_reason is not None:
            return self.finish_reason
        return "tool_calls" if self.tool_calls else "stop"

    def choice_chunks(self, n: int) -> list[list[str]]:
        """The content chunks of each choice; a single text serves all ``n`` choices."""
        if self.chunks is not None:
            return [self.chunks] * max(n, 1)
        if isinstance(self.text, list):
            return [split_tokens(text) for text in self.text]
        return [split_tokens(self.text)] * max(n, 1)

    def reasoning_chunks(self) -> list[str]:
        """The chunks streamed before the answer, the same for every choice; with
        ``reasoning_as="think"`` they are content, tags included."""
        if not self.reasoning:
            return []
        tokens = split_tokens(self.reasoning)
        if self.reasoning_as == "think":
            return ["<think>\n", *tokens, "\n</think>\n\n"]
        return tokens

    def answer_texts(self, n: int) -> list[str]:
        """The whole content of each choice, as a non-streamed completion gives it."""
        texts = ["".join(chunks) for chunks in self.choice_chunks(n)]
        if self.reasoning and self.reasoning_as == "think":
            return [f"<think>\n{self.reasoning}\n</think>\n\n{text}" for text in texts]
        return texts


Responder = Callable[[dict[str, Any]], ScriptedReply]

# A "token" is a word with its leading whitespace; trailing whitespace rides on the last one.
_WORD = re.compile(r"\s*\S+(?:\s+\Z)?|\s+\Z")
_LONG_WORD = 8
_PIECE = 4


def split_tokens(text: str) -> list[str]:
    """Cut text roughly the way a tokenizer would, so that chunks look like real deltas."""
    tokens: list[str] = []
    for match in _WORD.finditer(text):
        token = match.group()
        stripped = token.strip()
        if len(stripped) <= _LONG_WORD:
            tokens.append(token)
            continue
        lead = token[: len(token) - len(token.lstrip())]
        trail = token[len(token.rstrip()) :]
        pieces = [stripped[i : i + _PIECE] for i in range(0, len(stripped), _PIECE)]
        pieces[0] = lead + pieces[0]
        pieces[-1] += trail
        tokens.extend(pieces)
    return tokens


def echo_reply(request: dict[str, Any]) -> ScriptedReply:
    """The default answer: repeats the last user message, so tests can see what was sent (its
    images counted: "You said: what is this? [1 image]")."""
    messages = request.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return ScriptedReply(text=f"You said: {message_text(message)}")
    return ScriptedReply(text="You said nothing.")


_LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris "
    "nisi aliquip ex ea commodo consequat duis aute irure in reprehenderit voluptate velit esse "
    "cillum fugiat nulla pariatur excepteur sint occaecat cupidatat non proident sunt culpa qui "
    "officia deserunt mollit anim id est laborum"
).split()

_CODE_BLOCK = [
    "\n\n```python",
    "\ndef",
    " tally(",
    "words:",
    " list[str])",
    " ->",
    " int:",
    "\n    return",
    " sum(",
    "len(w)",
    " for",
    " w",
    " in",
    " words)",
    "\n```",
    "\n\n",
]
_WITH_CODE_FROM = 120


@lru_cache(maxsize=16)
def _lorem_tokens(tokens: int) -> tuple[str, ...]:
    # Code goes in the middle of longer replies: that is where a renderer's fence handling breaks.
    code = _CODE_BLOCK if tokens >= _WITH_CODE_FROM else []
    prose = tokens - len(code)
    out: list[str] = []
    for i in range(prose):
        word = _LOREM[(i * 7) % len(_LOREM)]
        if i % 11 == 0:
            word = word.capitalize()
        token = word if i == 0 or out[-1].endswith("\n\n") else " " + word
        if i % 11 == 10:
            token += "."
        out.append(token)
        if code and i == prose // 2 - 1:
            out.extend(code)
    if out and not out[-1].endswith("."):
        out[-1] += "."
    return tuple(out)


def lorem_reply(tokens: int) -> ScriptedReply:
    """A deterministic reply of exactly ``tokens`` chunks (lorem words, a code fence if long)."""
    chunks = list(_lorem_tokens(tokens))
    return ScriptedReply(text="".join(chunks), chunks=chunks)


def lorem_responder(tokens: int) -> Responder:
    reply = lorem_reply(tokens)
    return lambda _request: reply


def reasoning_responder(
    responder: Responder = echo_reply,
    *,
    reasoning: str = "Let me think this through step by step before I answer.",
    seconds: float | None = None,
    form: ReasoningForm = "reasoning_content",
) -> Responder:
    """``responder``'s replies, from a model that reasons (for ``seconds``) before answering."""

    def respond(request: dict[str, Any]) -> ScriptedReply:
        reply = responder(request)
        return dataclasses.replace(
            reply, reasoning=reasoning, reasoning_seconds=seconds, reasoning_as=form
        )

    return respond
