"""The prompts the benchmark users send and the replies the benchmark LLM streams back.

Every (conversation, choice) gets its own deterministic text, so the harness can tell from a
message's content which reply it belongs to (several choices share one Discord channel) and
check that each reply ended complete.
"""

from __future__ import annotations

import random
import re
from functools import lru_cache
from typing import Any

from sandbox.llm_server.script import message_text, split_tokens

_CONVERSATION = re.compile(r"\bconv-(\d+)\b")
# Words of at most 7 letters: with a period they stay within what `split_tokens` keeps whole,
# so a reply of N tokens streams as exactly N chunks.
_WORDS = (
    "stream reply edit token rate limit bucket thread channel message update window budget "
    "shared fair latency visible cursor model server client queue batch commit write read "
    "status final partial retry backoff header bridge slack discord gateway socket event "
    "order first last delta chunk text answer prompt context history store table row index "
    "since while before after because every other under above within until again often "
    "quick slow early late small large short long clear plain local remote steady busy"
).split()
# A short fenced block a quarter of the way in: layout code must carry fences across edits.
_CODE = ["\n\n```py", "\ndef", " add(a,", " b):", "\n    return", " a", " +", " b", "\n```"]


def prompt(conversation: int) -> str:
    return f"conv-{conversation}: explain how the bridge streams a long answer"


def conversation_of(request: dict[str, Any]) -> int:
    """The conversation a chat-completions request belongs to (from its last user message)."""
    for message in reversed(request.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            found = _CONVERSATION.search(message_text(message))
            if found:
                return int(found.group(1))
    return -1


@lru_cache(maxsize=4096)
def reply_text(conversation: int, choice: int, tokens: int) -> str:
    """Exactly `tokens` chunks of prose in paragraphs, with one code block."""
    rng = random.Random(f"{conversation}/{choice}")
    code_at = tokens // 4 if tokens >= 4 * len(_CODE) else -1
    out: list[str] = []
    sentence = 0
    paragraph = 0
    while len(out) < tokens:
        if len(out) == code_at:
            out.extend(_CODE[: tokens - len(out)])
            paragraph = sentence = 0
            out_break = "\n\n"
        else:
            out_break = ""
        if len(out) >= tokens:
            break
        word = rng.choice(_WORDS)
        if sentence == 0:
            word = word.capitalize()
        sentence += 1
        paragraph += 1
        if sentence >= rng.randint(8, 14):
            word += "."
            sentence = 0
        if not out:
            lead = ""
        elif out_break or (sentence == 1 and paragraph > rng.randint(35, 50)):
            lead, paragraph = "\n\n", 0
        else:
            lead = " "
        out.append(lead + word)
    text = "".join(out)
    if not text.endswith("."):
        text += "."
    assert len(split_tokens(text)) == tokens, "reply_text must stream as exactly `tokens` chunks"
    return text
