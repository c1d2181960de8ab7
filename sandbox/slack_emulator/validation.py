"""Slack's message limits: text length, block count and per-block text sizes.

Errors carry `response_metadata.messages` in Slack's `[ERROR] ... [json-pointer:...]` style.
"""

from __future__ import annotations

from typing import Any

from sandbox.slack_emulator.arguments import ApiError, Args

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3_000
MAX_SECTION_FIELD = 2_000
MAX_SECTION_FIELDS = 10
MAX_HEADER_TEXT = 150
MAX_MARKDOWN_BLOCKS_TEXT = 12_000  # cumulative over all `markdown` blocks in one message
MAX_MARKDOWN_TEXT = 12_000  # per markdown_text argument or chunk of the streaming methods


def check_text(text: str, limit: int) -> None:
    if len(text) > limit:
        raise ApiError("msg_too_long")


def message_blocks(args: Args) -> list[dict[str, Any]] | None:
    """The validated `blocks` argument, or None when absent."""
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
    if markdown_total > MAX_MARKDOWN_BLOCKS_TEXT:
        problems.append(
            f"[ERROR] markdown text over {MAX_MARKDOWN_BLOCKS_TEXT} chars [json-pointer:/blocks]"
        )
    if problems:
        raise ApiError("invalid_blocks", messages=problems)
    return blocks


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
