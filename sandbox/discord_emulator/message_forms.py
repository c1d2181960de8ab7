"""Validates a message create/edit body the way Discord does (lengths, embeds, allowed_mentions,
components).

Shared by channel messages, interaction responses and webhook follow-ups, which accept one form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import mentions
from .api import ApiError, Upload
from .model import Json
from .snowflakes import SnowflakeGenerator

CONTENT_LIMIT = 2000
EMBEDS_LIMIT = 10
EMBED_TOTAL_LIMIT = 6000
ACTION_ROW, BUTTON = 1, 2
ROWS_LIMIT = 5  # action rows per message
ROW_LIMIT = 5  # buttons per action row
CUSTOM_ID_LIMIT = 100
LABEL_LIMIT = 80
LINK_STYLE, PREMIUM_STYLE = 5, 6
BUTTON_STYLES = (1, 2, 3, 4, 5, 6)
_EMBED_FIELD_LIMITS = {"title": 256, "description": 4096}
_ABSENT: Any = object()


@dataclass(frozen=True, slots=True)
class MessageForm:
    """The writable fields of a message; `None` means absent from the body."""

    content: str | None
    embeds: list[Json] | None
    allowed_mentions: Json | None
    flags: int | None
    new_attachments: list[Json]
    kept_attachment_ids: frozenset[str] | None  # ids listed in `attachments`; None when absent
    components: list[Json] | None = None  # None when absent (an edit keeps the current ones)

    def is_empty(self) -> bool:
        return not (self.content or self.embeds or self.new_attachments or self.components)

    def attachments_after(self, current: list[Json]) -> list[Json]:
        """An edit keeps the attachments it lists (all if it lists none), plus its uploads."""
        kept = current
        if self.kept_attachment_ids is not None:
            kept = [a for a in current if str(a["id"]) in self.kept_attachment_ids]
        return kept + self.new_attachments


def parse(body: Json, uploads: Sequence[Upload], snowflakes: SnowflakeGenerator) -> MessageForm:
    content = body.get("content", _ABSENT)
    if content is _ABSENT:
        content = None
    elif content is None:
        content = ""  # an explicit null clears the content
    elif not isinstance(content, str):
        content = str(content)
    if content is not None and len(content) > CONTENT_LIMIT:
        raise ApiError.too_long("content", CONTENT_LIMIT)

    embeds = body.get("embeds")
    if embeds is not None:
        _check_embeds(embeds)

    allowed = body.get("allowed_mentions")
    if allowed is not None:
        errors = mentions.allowed_mentions_errors(allowed)
        if errors is not None:
            raise ApiError.invalid_form_tree({"allowed_mentions": errors})

    new_attachments: list[Json] = []
    for upload in uploads:
        attachment_id = snowflakes.next()
        url = f"https://cdn.discordapp.com/attachments/0/{attachment_id}/{upload.filename}"
        new_attachments.append(
            {
                "id": str(attachment_id),
                "filename": upload.filename,
                "size": upload.size,
                "url": url,
                "proxy_url": url,
                "content_type": upload.content_type,
            }
        )
    kept: frozenset[str] | None = None
    if "attachments" in body:
        kept = frozenset(str(a.get("id")) for a in body.get("attachments") or [])

    components = body.get("components")
    if components is not None:
        _check_components(components)

    flags = body.get("flags")
    return MessageForm(
        content=content,
        embeds=embeds,
        allowed_mentions=allowed,
        flags=int(flags) if flags is not None else None,
        new_attachments=new_attachments,
        kept_attachment_ids=kept,
        components=list(components) if components is not None else None,
    )


def _check_components(components: Any) -> None:
    """Action rows (type 1) of at most 5 buttons (type 2), at most 5 rows; a button has a style,
    a label of at most 80 characters or an emoji, and a custom_id of at most 100 characters
    (unique in the message), or a url for a link button, never both."""
    if not isinstance(components, list):
        message = "Only iterables may be used in a ListType"
        raise ApiError.invalid_form("components", "LIST_TYPE_CONVERT", message)
    if len(components) > ROWS_LIMIT:
        raise ApiError.too_long("components", ROWS_LIMIT)
    seen: set[str] = set()
    for index, row in enumerate(components):
        where = f"components.{index}"
        if not isinstance(row, dict) or row.get("type") != ACTION_ROW:
            raise ApiError.bad_choice(f"{where}.type", (ACTION_ROW,))
        children = row.get("components")
        if not isinstance(children, list) or not 1 <= len(children) <= ROW_LIMIT:
            raise ApiError.bad_length(f"{where}.components", 1, ROW_LIMIT)
        for position, button in enumerate(children):
            _check_button(f"{where}.components.{position}", button, seen)


def _check_button(where: str, button: Any, seen: set[str]) -> None:
    if not isinstance(button, dict) or button.get("type") != BUTTON:
        # Select menus and the rest exist on Discord; the bridge sends buttons only.
        raise ApiError.bad_choice(f"{where}.type", (BUTTON,))
    style = button.get("style")
    if style not in BUTTON_STYLES:
        raise ApiError.bad_choice(f"{where}.style", BUTTON_STYLES)
    label = button.get("label")
    if label is not None and (not isinstance(label, str) or len(label) > LABEL_LIMIT):
        raise ApiError.too_long(f"{where}.label", LABEL_LIMIT)
    if not label and not button.get("emoji") and style != PREMIUM_STYLE:
        message = "A label or an emoji is required"
        raise ApiError.invalid_form(f"{where}.label", "BUTTON_LABEL_OR_EMOJI_REQUIRED", message)
    custom_id = button.get("custom_id")
    if style == LINK_STYLE:
        if custom_id is not None or not button.get("url"):
            message = "A link button has a url and no custom_id"
            raise ApiError.invalid_form(where, "BUTTON_COMPONENT_INVALID", message)
        return
    if not isinstance(custom_id, str) or not custom_id:
        message = "A custom id is required"
        raise ApiError.invalid_form(f"{where}.custom_id", "BASE_TYPE_REQUIRED", message)
    if len(custom_id) > CUSTOM_ID_LIMIT:
        raise ApiError.too_long(f"{where}.custom_id", CUSTOM_ID_LIMIT)
    if custom_id in seen:
        message = "Component custom id cannot be duplicated"
        raise ApiError.invalid_form(f"{where}.custom_id", "COMPONENT_CUSTOM_ID_DUPLICATED", message)
    seen.add(custom_id)


def _check_embeds(embeds: Any) -> None:
    if not isinstance(embeds, list):
        message = "Only iterables may be used in a ListType"
        raise ApiError.invalid_form("embeds", "LIST_TYPE_CONVERT", message)
    if len(embeds) > EMBEDS_LIMIT:
        raise ApiError.too_long("embeds", EMBEDS_LIMIT)
    total = 0
    for index, embed in enumerate(embeds):
        for name, limit in _EMBED_FIELD_LIMITS.items():
            text = str(embed.get(name) or "")
            total += len(text)
            if len(text) > limit:
                raise ApiError.too_long(f"embeds.{index}.{name}", limit)
        for embed_field in embed.get("fields") or []:
            total += len(str(embed_field.get("name", ""))) + len(str(embed_field.get("value", "")))
        total += len(str((embed.get("footer") or {}).get("text", "")))
        total += len(str((embed.get("author") or {}).get("name", "")))
    if total > EMBED_TOTAL_LIMIT:
        message = f"Embed size exceeds maximum size of {EMBED_TOTAL_LIMIT}"
        raise ApiError.invalid_form("embeds", "MAX_EMBED_SIZE_EXCEEDED", message)


def empty_message() -> ApiError:
    return ApiError(400, 50006, "Cannot send an empty message")
