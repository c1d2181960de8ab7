"""What a reply's Markdown becomes on Slack: a `markdown` block with a plain-text fallback, and
every mention (<@U…>, @here, <!channel>, <!subteam^…>, ...) defused so a model can ping no one.
"""

from __future__ import annotations

import re
from typing import Any

ZERO_WIDTH_SPACE = "\u200b"
# Slack's `text` is the notification and screen-reader fallback once blocks are present; messages
# with several thousand characters of `text` are refused (msg_too_long), so keep it short.
FALLBACK_CHARS = 3_000
PROMPT_TITLE_CHARS = 40

# `<@U123>` / `<@W123|name>` (people: every `<@`, Slack gives it no other meaning), `<!here>`,
# `<!channel>`, `<!everyone>`, `<!subteam^S123>` (user groups), also with `|label`.
_SPECIAL_MENTION = re.compile(r"<(?=@|!(?:here|channel|everyone|subteam\^))", re.IGNORECASE)
_BARE_MENTION = re.compile(r"@(?=here|channel|everyone)", re.IGNORECASE)
_MENTION_STARTS = (
    "<@",
    "<!here",
    "<!channel",
    "<!everyone",
    "<!subteam^",
    "@here",
    "@channel",
    "@everyone",
)
_LONGEST_START = max(len(start) for start in _MENTION_STARTS)

_LINK = re.compile(r"\[([^\]\n]+)\]\((\S+?)\)")
_EMPHASIS = re.compile(r"\*\*|__")
_HEADING = re.compile(r"^#{1,6}[ \t]+", re.MULTILINE)


def neutralise_mentions(text: str) -> str:
    """Break every mention with a zero-width space: it still reads the same, pings no one.

    The change at each position depends only on the characters from there on, so the result for a
    settled prefix (see `settled_length`) is a prefix of the result for any longer text: what a
    native stream has already shown never needs to change.
    """
    text = _SPECIAL_MENTION.sub("<" + ZERO_WIDTH_SPACE, text)
    return _BARE_MENTION.sub("@" + ZERO_WIDTH_SPACE, text)


def settled_length(text: str) -> int:
    """How much of a growing `text` may be shown now: a trailing `<`, `@he` or `<!cha` may still
    become a mention, so it waits until the next characters decide it."""
    for index in range(max(0, len(text) - _LONGEST_START + 1), len(text)):
        if text[index] not in "<@":
            continue
        tail = text[index:].lower()
        if any(len(tail) < len(start) and start.startswith(tail) for start in _MENTION_STARTS):
            return index
    return len(text)


def plain_fallback(markdown: str) -> str:
    """The `text` of a message whose content is a markdown block: readable in a notification."""
    text = _LINK.sub(r"\1 (\2)", markdown)
    text = _EMPHASIS.sub("", text)
    text = _HEADING.sub("", text)
    # In `text` Slack parses <...> as links and mentions; the LLM's angle brackets are literal.
    # Escaped, `<@U1>` and `<!subteam^S1>` read the same and are no mentions: only a bare `@here`
    # is left for `neutralise_mentions` to break here.
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = neutralise_mentions(text)
    if len(text) > FALLBACK_CHARS:
        cut = text[: FALLBACK_CHARS - 1]
        entity = cut.rfind("&", len(cut) - 5)
        if entity != -1 and ";" not in cut[entity:]:
            cut = cut[:entity]  # never leave half an escape like "&am"
        text = cut + "…"
    return text


def escaped_text(text: str) -> str:
    """Text shown as Slack `mrkdwn` (a command's answer): its &, < and > escaped, so it reads
    as written and holds no link or mention, and bare @here/@channel broken."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return neutralise_mentions(text)


def message_content(markdown: str) -> dict[str, Any]:
    """The `text` and `blocks` arguments of chat.postMessage / chat.update for a reply's text."""
    return {
        "text": plain_fallback(markdown) or "…",
        "blocks": [{"type": "markdown", "text": neutralise_mentions(markdown)}],
    }


def prompt_title(prompt: str) -> str:
    """The short label Slack shows for a suggested prompt: its first line, shortened."""
    line = next((part.strip() for part in prompt.splitlines() if part.strip()), prompt.strip())
    return line if len(line) <= PROMPT_TITLE_CHARS else line[: PROMPT_TITLE_CHARS - 1] + "…"
