"""Slack's message limits: text length, block count and per-block text sizes.

Errors carry `response_metadata.messages` in Slack's `[ERROR] ... [json-pointer:...]` style.
"""

from __future__ import annotations

import random
import string
from typing import Any

from sandbox.slack_emulator.arguments import ApiError, Args

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3_000
MAX_SECTION_FIELD = 2_000
MAX_SECTION_FIELDS = 10
MAX_HEADER_TEXT = 150
MAX_MARKDOWN_BLOCKS_TEXT = 12_000  # cumulative over all `markdown` blocks in one message
MAX_MARKDOWN_TEXT = 12_000  # per markdown_text argument or chunk of the streaming methods
MAX_TASK_FIELD = 256  # a task_update chunk's title, details and output
TASK_STATUSES = ("pending", "in_progress", "complete", "error")
MAX_ACTIONS_ELEMENTS = 25
MAX_CONTEXT_ACTIONS_ELEMENTS = 5
MAX_BUTTON_TEXT = 75
MAX_ACTION_ID = 255
MAX_VALUE = 2_000


def check_text(text: str, limit: int) -> None:
    if len(text) > limit:
        raise ApiError("msg_too_long")


def stream_chunks(args: Args) -> list[dict[str, Any]] | None:
    """The validated `chunks` argument of the streaming methods, or None when absent."""
    chunks = args.json_list("chunks", error="invalid_chunks")
    if chunks is None:
        return None
    problems: list[str] = []
    for index, chunk in enumerate(chunks):
        pointer = f"/chunks/{index}"
        if not isinstance(chunk, dict) or not isinstance(chunk.get("type"), str):
            missing = f"[ERROR] missing required field: type [json-pointer:{pointer}]"
            raise ApiError("invalid_arguments", messages=[missing])
        kind = chunk["type"]
        if kind == "markdown_text":
            if not isinstance(chunk.get("text"), str):
                problems.append(f"[ERROR] missing required field: text [json-pointer:{pointer}]")
            else:
                check_text(chunk["text"], MAX_MARKDOWN_TEXT)
        elif kind == "task_update":
            problems += _task_problems(chunk, pointer)
        elif kind == "plan_update":
            problems += _required_text(chunk, "title", pointer, MAX_TASK_FIELD)
        elif kind == "blocks":
            if not isinstance(chunk.get("blocks"), list):
                problems.append(f"[ERROR] missing required field: blocks [json-pointer:{pointer}]")
        else:
            problems.append(f"[ERROR] unsupported type: {kind} [json-pointer:{pointer}/type]")
    if problems:
        raise ApiError("invalid_chunks", messages=problems)
    return chunks


def _task_problems(chunk: dict[str, Any], pointer: str) -> list[str]:
    problems = _required_text(chunk, "id", pointer, None)
    problems += _required_text(chunk, "title", pointer, MAX_TASK_FIELD)
    if chunk.get("status") not in TASK_STATUSES:
        problems.append(f"[ERROR] must be one of {', '.join(TASK_STATUSES)} "
                        f"[json-pointer:{pointer}/status]")  # fmt: skip
    for key in ("details", "output"):
        value = chunk.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            problems.append(f"[ERROR] must be a string [json-pointer:{pointer}/{key}]")
        else:
            problems += _too_long(value, MAX_TASK_FIELD, f"{pointer}/{key}")
    return problems


def _required_text(chunk: dict[str, Any], key: str, pointer: str, limit: int | None) -> list[str]:
    value = chunk.get(key)
    if not isinstance(value, str) or not value:
        return [f"[ERROR] missing required field: {key} [json-pointer:{pointer}]"]
    return _too_long(value, limit, f"{pointer}/{key}") if limit is not None else []


def message_blocks(args: Args) -> list[dict[str, Any]] | None:
    """The validated `blocks` argument, or None when absent. Interactive blocks without a
    block_id get one, as Slack gives them (interaction payloads name it)."""
    blocks = args.json_list("blocks", error="invalid_blocks_format")
    if blocks is None:
        return None
    problems: list[str] = []
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"[ERROR] no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]")
    markdown_total = 0
    for index, block in enumerate(blocks):
        pointer = f"/blocks/{index}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            problems.append(f"[ERROR] missing required field: type [json-pointer:{pointer}]")
            continue
        kind = block["type"]
        if kind == "section":
            problems += _section_problems(block, pointer)
        elif kind == "header":
            problems += _too_long(
                _text_of(block.get("text")), MAX_HEADER_TEXT, f"{pointer}/text/text"
            )
        elif kind == "markdown":
            text = block.get("text")
            if not isinstance(text, str):
                problems.append(f"[ERROR] missing required field: text [json-pointer:{pointer}]")
            else:
                markdown_total += len(text)
        elif kind in ("actions", "context_actions"):
            problems += _interactive_problems(block, pointer)
    if markdown_total > MAX_MARKDOWN_BLOCKS_TEXT:
        problems.append(
            f"[ERROR] markdown text over {MAX_MARKDOWN_BLOCKS_TEXT} chars [json-pointer:/blocks]"
        )
    if problems:
        raise ApiError("invalid_blocks", messages=problems)
    return [_with_block_id(block) for block in blocks]


def _with_block_id(block: dict[str, Any]) -> dict[str, Any]:
    # Only where a click names it; other blocks are kept as sent.
    if "block_id" in block or block.get("type") not in ("actions", "context_actions"):
        return block
    return {**block, "block_id": "".join(random.choices(string.ascii_letters + string.digits, k=5))}


def _interactive_problems(block: dict[str, Any], pointer: str) -> list[str]:
    """actions (buttons...) and context_actions (feedback_buttons, icon_button) blocks."""
    elements = block.get("elements")
    limit = MAX_ACTIONS_ELEMENTS if block["type"] == "actions" else MAX_CONTEXT_ACTIONS_ELEMENTS
    if not isinstance(elements, list) or not elements:
        return [f"[ERROR] missing required field: elements [json-pointer:{pointer}]"]
    if len(elements) > limit:
        return [f"[ERROR] no more than {limit} items allowed [json-pointer:{pointer}/elements]"]
    problems: list[str] = []
    allowed = (
        {"button", "static_select", "overflow", "datepicker", "checkboxes", "radio_buttons"}
        if block["type"] == "actions"
        else {"feedback_buttons", "icon_button"}
    )
    seen: set[str] = set()
    for index, element in enumerate(elements):
        at = f"{pointer}/elements/{index}"
        kind = element.get("type") if isinstance(element, dict) else None
        if kind not in allowed:
            problems.append(f"[ERROR] unsupported type: {kind} [json-pointer:{at}/type]")
            continue
        assert isinstance(element, dict)
        action_id = element.get("action_id", "")
        if not isinstance(action_id, str) or len(action_id) > MAX_ACTION_ID:
            problems.append(f"[ERROR] invalid action_id [json-pointer:{at}/action_id]")
        elif action_id and action_id in seen:
            problems.append(f"[ERROR] action_id must be unique [json-pointer:{at}/action_id]")
        seen.add(str(action_id))
        if kind == "feedback_buttons":
            for side in ("positive_button", "negative_button"):
                problems += _button_problems(element.get(side), f"{at}/{side}", needs_value=True)
        elif kind in ("button", "icon_button"):
            problems += _button_problems(element, at, needs_value=False)
    return problems


def _button_problems(button: Any, pointer: str, *, needs_value: bool) -> list[str]:
    if not isinstance(button, dict):
        return [f"[ERROR] missing required field [json-pointer:{pointer}]"]
    text = button.get("text")
    if not isinstance(text, dict) or text.get("type") != "plain_text":
        return [f"[ERROR] text must be a plain_text object [json-pointer:{pointer}/text]"]
    problems = _too_long(str(text.get("text", "")), MAX_BUTTON_TEXT, f"{pointer}/text/text")
    value = button.get("value")
    if needs_value and not isinstance(value, str):
        problems.append(f"[ERROR] missing required field: value [json-pointer:{pointer}]")
    elif isinstance(value, str):
        problems += _too_long(value, MAX_VALUE, f"{pointer}/value")
    return problems


def _section_problems(block: dict[str, Any], pointer: str) -> list[str]:
    fields = block.get("fields") or []
    if "text" not in block and not fields:
        return [f"[ERROR] must provide either text or fields [json-pointer:{pointer}]"]
    problems = _too_long(_text_of(block.get("text")), MAX_SECTION_TEXT, f"{pointer}/text/text")
    if len(fields) > MAX_SECTION_FIELDS:
        problems.append(f"[ERROR] no more than 10 items allowed [json-pointer:{pointer}/fields]")
    for i, item in enumerate(fields):
        problems += _too_long(_text_of(item), MAX_SECTION_FIELD, f"{pointer}/fields/{i}/text")
    return problems


def _text_of(obj: Any) -> str:
    return str(obj.get("text", "")) if isinstance(obj, dict) else ""


def _too_long(text: str, limit: int, pointer: str) -> list[str]:
    if len(text) > limit:
        return [f"[ERROR] must be less than {limit + 1} characters [json-pointer:{pointer}]"]
    return []
