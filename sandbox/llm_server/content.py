"""What a chat-completions request holds: the text and the image parts of its messages.

A message's content is a string or a list of parts (``{"type": "text"}``,
``{"type": "image_url"}``); the echo reply, the token estimate, the no-vision check and the
request log all read it through here.
"""

from __future__ import annotations

import math
from typing import Any

# What OpenAI answers when a model without vision gets an image part (HTTP 400).
NO_VISION_MESSAGE = "Invalid content type. image_url is only supported by certain models."
# About what OpenAI charges for one 1024x1024 image at high detail.
_IMAGE_TOKENS = 765


def _parts(message: Any) -> list[Any]:
    if not isinstance(message, dict):
        return []
    content = message.get("content")
    return content if isinstance(content, list) else []


def _is_image(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "image_url"


def image_count(message: Any) -> int:
    return sum(1 for part in _parts(message) if _is_image(part))


def images_label(count: int) -> str:
    return f"[{count} image{'s' if count != 1 else ''}]"


def message_text(message: Any) -> str:
    """The text of a chat message, whether its content is a string or a list of parts; image
    parts are counted at the end ("what is this? [1 image]")."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    text = "".join(
        part["text"]
        for part in content
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    )
    images = image_count(message)
    if not images:
        return text
    return f"{text} {images_label(images)}" if text else images_label(images)


def image_urls(request: dict[str, Any]) -> list[str]:
    """The URLs (``data:`` URLs, as the bridge sends them) of every image part of a request."""
    messages = request.get("messages")
    if not isinstance(messages, list):
        return []
    urls = []
    for message in messages:
        for part in _parts(message):
            if _is_image(part) and isinstance(part.get("image_url"), dict):
                url = part["image_url"].get("url")
                if isinstance(url, str):
                    urls.append(url)
    return urls


def first_image_part(request: dict[str, Any]) -> tuple[int, int] | None:
    """(message, part) index of the first image part, as OpenAI names it in an error's param."""
    messages = request.get("messages")
    if not isinstance(messages, list):
        return None
    for i, message in enumerate(messages):
        for j, part in enumerate(_parts(message)):
            if _is_image(part):
                return i, j
    return None


def estimate_prompt_tokens(request: dict[str, Any]) -> int:
    """About four characters per token, as with OpenAI's English text; no tokenizer download."""
    messages = request.get("messages")
    if not isinstance(messages, list):
        return 0
    chars = images = 0
    for message in messages:
        chars += len(message_text(message))
        images += image_count(message)
    return math.ceil(chars / 4) + images * _IMAGE_TOKENS


def without_image_data(request: dict[str, Any]) -> dict[str, Any]:
    """The request with each image's data URL cut to its head ("data:image/png;base64,"), for a
    request log that must not keep megabytes per image; the request itself if it has none."""
    if first_image_part(request) is None:
        return request
    messages = []
    for message in request["messages"]:
        parts = _parts(message)
        if not any(_is_image(part) for part in parts):
            messages.append(message)
            continue
        kept = [_without_data(part) if _is_image(part) else part for part in parts]
        messages.append({**message, "content": kept})
    return {**request, "messages": messages}


def _without_data(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else None
    if not isinstance(url, str) or not url.startswith("data:"):
        return part
    head, comma, data = url.partition(",")
    assert isinstance(image, dict)
    return {**part, "image_url": {**image, "url": f"{head}{comma}", "omitted_chars": len(data)}}
