"""The sandbox's stand-in model: plausible canned answers, chosen by keywords of the prompt.

It plugs into the local LLM server as its `responder`; the server streams the answer at the pace
the sandbox asks for, so the bridge sees what a real model would send.
"""

from __future__ import annotations

from typing import Any

from sandbox.llm_server import ScriptedReply
from sandbox.llm_server.content import image_count
from sandbox.llm_server.script import message_text

INTRO = (
    "chat-bridge brings an LLM into the places where your team already talks: mention me in a "
    "Slack channel or on a Discord server and I answer in a thread, streaming the reply while I "
    "write it.\n\n"
    "I keep the conversation in my own database, answer every message exactly once, and share "
    "each platform's rate limits fairly between everyone's replies."
)

_RATE_LIMITS = (
    "One edit scheduler serves every reply in the process. Each reply changes at most once per "
    "`streaming.edit_interval` (one second here), and all replies share {budget}.\n\n"
    "If {platform} still answers **429**, the scheduler waits for `Retry-After` and then sends "
    "the latest text, so a busy channel delays text but never loses or doubles it."
)
_BUDGETS = {
    "slack": "the workspace's budget for `chat.appendStream` and `chat.update` (Tier 3 and 4)",
    "discord": "each channel's bucket, learned from Discord's `X-RateLimit-*` headers",
}

BACKOFF = """Here is a small, dependency-free helper. It retries only errors that are worth \
retrying, waits longer after each failure, and adds jitter so that many clients do not retry \
in lockstep:

```python
import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class RetryableError(Exception):
    \"\"\"A failure that may go away: a timeout, a 429, a 5xx.\"\"\"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


async def with_backoff(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int = 5,
    base: float = 0.5,
    cap: float = 30.0,
) -> T:
    \"\"\"Run `call`, retrying RetryableError with capped exponential backoff.\"\"\"
    for attempt in range(attempts):
        try:
            return await call()
        except RetryableError as exc:
            if attempt == attempts - 1:
                raise
            # Full jitter: a random wait between 0 and the exponential bound.
            delay = random.uniform(0, min(cap, base * 2**attempt))
            if exc.retry_after is not None:
                delay = max(delay, exc.retry_after)  # the server knows best
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")
```

How to use it:

```python
user = await with_backoff(lambda: api.fetch_user(user_id), attempts=3)
```

A few things worth knowing:

- **Retry only what can succeed later.** A 400 or a 403 will fail the same way every time; \
retrying it only burns your rate limit.
- **Honour `Retry-After`.** When a server says how long to wait, wait at least that long; the \
helper takes the larger of the two delays.
- **Cap the delay and the attempts.** Without `cap`, the sixth retry would wait over half a \
minute; without a limit on attempts, a dead service keeps your task alive forever.
- **Make the call idempotent.** A timeout does not tell you whether the request arrived, so a \
retried write must not create a second record (use an idempotency key or a nonce).

This is the same pattern chat-bridge uses when a model fails before its first token: a few \
attempts, a growing pause, and the server's `Retry-After` when it sends one."""

TEAM_NAME = (
    "Your secret is safe with me: a DM is just between the two of us, and I keep it as a "
    "conversation of its own.\n\n"
    "As for a name, how about **Relay**? It is short, friendly, and it says what I do: pass your "
    "questions to the model and bring the answers back while they are being written.\n\n"
    "Other ideas: *Scribe*, *Parley*, *Echo* or *Hal* (if your team likes a little danger)."
)

GREETING = (
    "Hello! I am the chat-bridge sandbox bot. Ask me what chat-bridge is, how it handles rate "
    "limits, or for a code example, and watch the reply stream in."
)

_FALLBACK = (
    "You asked: “{prompt}”\n\n"
    "I am a scripted stand-in for a real model, so my words are canned, but everything around "
    "them is real: the bridge claimed your message's event, stored it, showed the typing "
    "indicator and is streaming this reply through the same edit scheduler it uses in "
    "production.\n\n"
    "Ask me for *code*, about *rate limits*, or run the sandbox with `--llm-base-url` to talk to "
    "a real model."
)


SCREENSHOT = (
    "I can see your screenshot. It shows a Python traceback that ends in\n\n"
    "```\nConnectionResetError: [Errno 104] Connection reset by peer\n```\n\n"
    "raised from `fetch_report()` while it reads the response. The server closed the connection "
    "before it finished answering: usually a proxy's idle timeout or the server restarting.\n\n"
    "- Retry the call with backoff (it is safe: it only reads).\n"
    "- If it happens on every large report, stream the response or raise the proxy's timeout."
)

# Long enough to be stopped halfway: the sandbox's Stop step asks for it.
STORY = "\n\n".join(
    f"**Chapter {n}.** "
    + " ".join(
        f"The bridge carried message {n * 10 + i} across the river, one word at a time, "
        "and nobody waited for it."
        for i in range(6)
    )
    for n in range(1, 13)
)


def rate_limits(platform: str) -> str:
    name = "Discord" if platform == "discord" else "Slack"
    return _RATE_LIMITS.format(budget=_BUDGETS[name.lower()], platform=name)


def answer_for(prompt: str, images: int = 0) -> str:
    """The canned answer to a user's prompt (the bot's mention already removed) and the images
    that came with it."""
    text = prompt.lower()
    if images:
        return SCREENSHOT
    if "story" in text:
        return STORY
    if any(word in text for word in ("backoff", "code", "example", "function", "python")):
        return BACKOFF
    if "rate limit" in text:
        return rate_limits("discord" if "discord" in text else "slack")
    if "name" in text or "secret" in text:
        return TEAM_NAME
    if "chat-bridge" in text or "what is" in text or "who are you" in text:
        return INTRO
    if text.strip(" !.?") in ("hi", "hello", "hey", "hallo", "yo"):
        return GREETING
    shown = prompt.strip().replace("\n", " ")
    return _FALLBACK.format(prompt=shown if len(shown) <= 80 else shown[:79] + "…")


def title_for(conversation: str) -> str:
    """A short title, as the bridge asks for after a conversation's first reply."""
    # The request holds "User: ...\n\nAssistant: ..."; the question says what it is about.
    question = conversation.split("\n\nAssistant:", 1)[0].removeprefix("User:").strip()
    text = question.lower()
    if "backoff" in text:
        return "Retrying with exponential backoff"
    if "rate limit" in text:
        return "Staying under rate limits"
    if "name" in text or "secret" in text:
        return "Naming the team bot"
    if "chat-bridge" in text:
        return "What chat-bridge does"
    return " ".join(question.split()[:6]).rstrip("?.!") or "Sandbox chat"


class SandboxModel:
    """`responder` for LLMServer: streamed answers to chat requests, titles to the others."""

    def __init__(self, *, first_token_delay: float) -> None:
        self.first_token_delay = first_token_delay

    def __call__(self, request: dict[str, Any]) -> ScriptedReply:
        messages = request.get("messages")
        turns = messages if isinstance(messages, list) else []
        last = next((m for m in reversed(turns) if _role(m) == "user"), None)
        last_user = message_text(last) if last is not None else ""
        if request.get("stream") is not True:
            # The bridge asks for titles without streaming, with the conversation as one turn.
            return ScriptedReply(text=title_for(last_user))
        answer = answer_for(last_user, image_count(last))
        return ScriptedReply(text=answer, first_token_delay=self.first_token_delay)


def _role(message: Any) -> str:
    return str(message.get("role")) if isinstance(message, dict) else ""
