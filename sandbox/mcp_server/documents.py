"""The short documents the sandbox's `search_docs` tool searches, and the search: words of the
query counted in each document's title (three times) and text."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Document:
    title: str
    text: str


DOCUMENTS: tuple[Document, ...] = (
    Document(
        "What chat-bridge is",
        "chat-bridge brings an LLM into Slack threads and DMs and Discord channels, threads and "
        "DMs. Mention the bot and it answers in the thread, streaming the reply as it is written. "
        "It runs as one self-hosted service in front of any OpenAI-compatible model (OpenAI, "
        "vLLM, Ollama, LM Studio, a gateway), configured in one TOML file. Every event is "
        "answered exactly once, across retries, restarts and several instances.",
    ),
    Document(
        "The offline sandbox",
        "`chat-bridge sandbox` runs the real bridge against bundled emulators of Slack and "
        "Discord and a local LLM server, with no tokens, no configuration and no network. It "
        "plays a short conversation on both platforms (a mention, follow-ups, a long reply with "
        "code, a screenshot, a stopped reply, a DM) and sums up API calls, edits, 429s and "
        "tokens. `--interactive` lets you type as a Slack or Discord user.",
    ),
    Document(
        "Tools over MCP",
        "The bridge can offer the model tools from MCP servers listed under [[mcp.servers]]: a "
        "command started over stdio, or a URL reached over streamable HTTP. A tool is named by "
        "its server, `server.tool`; `default_tools` and an override's `tools` select them "
        "('*', 'server.*', 'server.tool'), and `allowed_tools` limits what a server may offer. "
        "Each call has the server's `timeout`; a server that is down offers no tools until it "
        "is back. `chat-bridge tools --config FILE` lists every server's tools.",
    ),
    Document(
        "Limits and quotas",
        "[limits] protects the model and the budget: max_input_chars, user_messages_per_minute, "
        "user_concurrent_replies, channel_concurrent_replies, queue_limit, and daily token "
        "quotas per user and per channel (user_daily_tokens, channel_daily_tokens) counted in "
        "the database over the UTC day. A refused message causes no LLM call; the notice says "
        "which limit and when it resets, at most once a minute per user.",
    ),
    Document(
        "Admin commands",
        "Users listed in access.admins manage the bot from the chat: Slack `/chat-bridge "
        "<command>`, Discord `/bridge <command>`. Commands: `help`, `reset` (start a fresh "
        "conversation), `usage` (today's tokens of the top users and channels), `settings` (the "
        "effective settings and where each comes from), `model <model>`, `prompt <prompt>`, "
        "`trigger <mention, always or off>` and `reset-settings`.",
    ),
    Document(
        "Streaming and rate limits",
        "Replies stream by editing the bot's message at most once per streaming.edit_interval. "
        "One edit scheduler shares every platform budget fairly between concurrent replies: a "
        "Slack workspace's chat.update tier, a Discord channel's bucket and the bot's global "
        "limit. A 429 delays text, never loses or doubles it. Long replies continue in further "
        "messages, split at paragraphs, with code blocks closed and reopened.",
    ),
    Document(
        "Crashes, deploys and outages",
        "Every stored user message is an inbox entry until its reply ends. A SIGTERM drains: "
        "replies in flight finish. After a crash the next start finishes the cut reply in the "
        "same message and answers the messages that were waiting, each once. A database outage "
        "of up to 30 s is waited out.",
    ),
)

_WORD = re.compile(r"[a-z0-9_]+")
_STOPWORDS = frozenset(
    "a an and are as at be by can do does for from how i in is it of on or the to what when "
    "where which who why with you".split()
)


def search(query: str, limit: int = 3) -> list[tuple[Document, int]]:
    """The documents that match `query` best, with their scores; none when no word matches."""
    words = {w for w in _WORD.findall(query.lower()) if w not in _STOPWORDS}
    scored: list[tuple[Document, int]] = []
    for document in DOCUMENTS:
        title = _WORD.findall(document.title.lower())
        text = _WORD.findall(document.text.lower())
        score = sum(3 * title.count(w) + text.count(w) for w in words)
        score += sum(1 for w in words if len(w) > 3 and any(t.startswith(w) for t in text))
        if score > 0:
            scored.append((document, score))
    scored.sort(key=lambda pair: -pair[1])
    return scored[: max(1, limit)]
