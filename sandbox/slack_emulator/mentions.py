"""Who a message notifies: the mentions Slack parses in `text`, in mrkdwn text objects, in
`markdown` blocks (translated to mrkdwn by Slack) and in rich text elements.

Escaped angle brackets (`&lt;@U1&gt;`) and anything that breaks the syntax (a zero-width space
after the `<`) are text, not mentions. Bare `@here` counts only with `link_names`, which the
emulator does not model, so it is never a mention here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

# Case-insensitive on purpose: the emulator errs towards reporting a ping.
_MENTION = re.compile(
    r"<(?:@(?P<user>[UW][A-Z0-9]+)"
    r"|!subteam\^(?P<group>[A-Z0-9]+)"
    r"|!(?P<broadcast>here|channel|everyone))"
    r"(?:\|[^>]*)?>",
    re.IGNORECASE,
)
_RICH_CONTAINERS = (
    "rich_text_section",
    "rich_text_preformatted",
    "rich_text_quote",
    "rich_text_list",
)


def mentions_in(text: str, blocks: list[dict[str, Any]] | None) -> list[str]:
    """Who `text` and `blocks` notify, in order, each once: user ids (`U…`/`W…`), user-group ids
    (`S…`) and `@here` / `@channel` / `@everyone`."""
    found = list(_in_mrkdwn(text))
    for block in blocks or ():
        found += _in_block(block)
    return list(dict.fromkeys(found))


def _in_mrkdwn(text: str) -> Iterator[str]:
    for match in _MENTION.finditer(text):
        if match["user"]:
            yield match["user"].upper()
        elif match["group"]:
            yield match["group"].upper()
        else:
            yield "@" + match["broadcast"].lower()


def _in_text_object(obj: Any) -> list[str]:
    if isinstance(obj, dict) and obj.get("type") == "mrkdwn":
        return list(_in_mrkdwn(str(obj.get("text", ""))))
    return []  # plain_text is never parsed for mentions


def _in_block(block: dict[str, Any]) -> list[str]:
    kind = block.get("type")
    if kind == "markdown":
        return list(_in_mrkdwn(str(block.get("text", ""))))
    if kind == "section":
        found = _in_text_object(block.get("text"))
        for field in block.get("fields") or ():
            found += _in_text_object(field)
        return found
    if kind == "context":
        return [m for element in block.get("elements") or () for m in _in_text_object(element)]
    if kind == "rich_text":
        return [m for element in block.get("elements") or () for m in _in_rich_text(element)]
    return []


def _in_rich_text(element: Any) -> list[str]:
    if not isinstance(element, dict):
        return []
    kind = element.get("type")
    if kind in _RICH_CONTAINERS:
        return [m for child in element.get("elements") or () for m in _in_rich_text(child)]
    if kind == "user":
        return [str(element.get("user_id", ""))]
    if kind == "usergroup":
        return [str(element.get("usergroup_id", ""))]
    if kind == "broadcast":
        return ["@" + str(element.get("range", ""))]
    return []
