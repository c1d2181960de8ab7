"""What a person would see in the Slack client: messages flattened to text, blocks rendered roughly.

Tests assert on this view and the sandbox prints it; exact visual fidelity is not the goal. A
message's buttons (actions and context_actions blocks) are shown apart from its content, in
`controls`, so a reply's text reads the same with or without them. A streamed message's task
cards show as lines ("⚙ docs.search — in progress") where each first came in its text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sandbox.slack_emulator.model import Message, User

_USER_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_CONTROL_BLOCKS = ("actions", "context_actions")


@dataclass(frozen=True, slots=True)
class ShownMessage:
    ts: str
    user: str | None
    bot_id: str | None
    text: str
    blocks: list[dict[str, Any]] | None
    rendered: str  # the text a reader sees: blocks when present, otherwise `text`
    is_streaming: bool
    edits: int
    subtype: str | None = None
    thread_ts: str | None = None
    chunks: tuple[dict[str, Any], ...] = ()
    # Task cards (task_update chunks): the latest state of each id, in first-seen order.
    tasks: tuple[dict[str, Any], ...] = ()
    # Who the message notified: user ids, user-group ids (S…), "@here"/"@channel"/"@everyone".
    notified: tuple[str, ...] = ()
    # Its buttons, one entry per interactive block: "[Stop]", "[👍] [👎]".
    controls: tuple[str, ...] = ()

    @property
    def is_bot(self) -> bool:
        return self.bot_id is not None


def show(message: Message, users: Mapping[str, User]) -> ShownMessage:
    content = [b for b in message.blocks or () if b.get("type") not in _CONTROL_BLOCKS]
    controls = [b for b in message.blocks or () if b.get("type") in _CONTROL_BLOCKS]
    rendered = render_blocks(content, users) if content else ""
    if message.streamed or not rendered:
        # Streamed text lives in `text`; blocks given to chat.stopStream sit below it.
        rendered = "\n".join(part for part in (_streamed(message), rendered) if part)
    return ShownMessage(
        ts=message.ts,
        user=message.user,
        bot_id=message.bot_id,
        text=message.text,
        blocks=message.blocks,
        rendered=rendered,
        is_streaming=message.streaming,
        edits=message.edits,
        subtype=message.subtype,
        thread_ts=message.thread_ts,
        chunks=tuple(message.chunks),
        tasks=tuple(message.tasks.values()),
        notified=tuple(message.notified),
        controls=tuple(_render_block(block, users) for block in controls),
    )


def task_line(task: Mapping[str, Any]) -> str:
    """One task card on one line: "⚙ docs.search — error: timed out after 10 s"."""
    line = f"⚙ {task.get('title', '')} — {str(task.get('status', '')).replace('_', ' ')}"
    if task.get("details"):
        line += f": {task['details']}"
    if task.get("output"):
        line += f" → {task['output']}"
    return line


def _streamed(message: Message) -> str:
    """The streamed text with its task cards, each where its id first came."""
    if not message.tasks:
        return message.text
    pieces: list[str] = []
    start = 0
    for task_id, task in message.tasks.items():
        at = message.task_offsets[task_id]
        pieces += [message.text[start:at], task_line(task)]
        start = at
    pieces.append(message.text[start:])
    return "\n".join(piece.strip("\n") for piece in pieces if piece.strip())


def render_blocks(blocks: list[dict[str, Any]] | None, users: Mapping[str, User]) -> str:
    lines = [_render_block(block, users) for block in blocks or ()]
    return "\n".join(line for line in lines if line)


def _render_block(block: dict[str, Any], users: Mapping[str, User]) -> str:
    kind = block.get("type")
    if kind in ("section", "header"):
        parts = [_text_object(block.get("text"))]
        parts += [_text_object(f) for f in block.get("fields") or ()]
        accessory = block.get("accessory")
        if isinstance(accessory, dict):
            parts.append(_element(accessory))
        return _mentions("\n".join(p for p in parts if p), users)
    if kind == "markdown":
        return _mentions(str(block.get("text", "")), users)
    if kind == "context":
        return _mentions(" ".join(_element(e) for e in block.get("elements") or ()), users)
    if kind == "divider":
        return "---"
    if kind in ("actions", "context_actions"):
        return " ".join(_element(e) for e in block.get("elements") or ())
    if kind == "image":
        return f"[image: {block.get('alt_text', '')}]"
    if kind == "rich_text":
        return "".join(_rich_text(e, users) for e in block.get("elements") or ())
    return f"[{kind}]"


def _text_object(obj: Any) -> str:
    return str(obj.get("text", "")) if isinstance(obj, dict) else ""


def _element(element: dict[str, Any]) -> str:
    kind = element.get("type")
    if kind in ("mrkdwn", "plain_text"):
        return _text_object(element)
    if kind in ("button", "icon_button"):
        return f"[{_text_object(element.get('text'))}]"
    if kind == "feedback_buttons":
        sides = (element.get("positive_button"), element.get("negative_button"))
        return " ".join(f"[{_text_object(s.get('text'))}]" for s in sides if isinstance(s, dict))
    if kind == "image":
        return f"[image: {element.get('alt_text', '')}]"
    return f"[{kind}]"


def _rich_text(element: dict[str, Any], users: Mapping[str, User]) -> str:
    kind = element.get("type")
    if kind in ("rich_text_section", "rich_text_preformatted", "rich_text_quote"):
        return "".join(_rich_text(e, users) for e in element.get("elements") or ())
    if kind == "rich_text_list":
        items = [_rich_text(e, users) for e in element.get("elements") or ()]
        return "\n".join(f"- {item}" for item in items)
    if kind == "text":
        return str(element.get("text", ""))
    if kind == "link":
        return str(element.get("text") or element.get("url", ""))
    if kind == "user":
        return _user_label(str(element.get("user_id", "")), users)
    if kind == "emoji":
        return f":{element.get('name', '')}:"
    return ""


def _mentions(text: str, users: Mapping[str, User]) -> str:
    return _USER_MENTION.sub(lambda m: _user_label(m.group(1), users), text)


def _user_label(user_id: str, users: Mapping[str, User]) -> str:
    user = users.get(user_id)
    return f"@{user.name}" if user else f"@{user_id}"
