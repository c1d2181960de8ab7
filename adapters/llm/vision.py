"""Images to the model as OpenAI content parts, as `llm.vision` allows, and models that refuse them.

With `vision = "auto"` images are sent until an endpoint answers that the model takes no image
input; that model is then text-only for the life of the process (each image replaced by a short
note in the text), and the refused request is sent again without them so the user still gets an
answer.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections.abc import Sequence
from typing import Any, Literal

from adapters.llm.tools import ToolNames, is_tool_turn, tool_message
from bridge.ports import ChatTurn

log = logging.getLogger(__name__)

VISION_OFF = "[image not sent: vision is off]"
NOT_ACCEPTED = "[image not sent: the model does not accept images]"

# Past this many image bytes in one request the base64 encoding leaves the event loop, where an
# 8 MB image would hold every other reply for about 10 ms.
_ENCODE_IN_THREAD_FROM = 512 * 1024

# What servers answer (HTTP 400, or 422 from validating gateways) when the model takes no images:
#   OpenAI:    "Invalid content type. image_url is only supported by certain models."
#   vLLM:      "<model> is not a multimodal model"
#   Ollama:    "this model does not support image input"
#   LM Studio: "Model does not support images. Please use a model that does."
#   DeepSeek:  "Failed to deserialize ...: unknown variant `image_url`, expected `text`"
#   OpenRouter: "No endpoints found that support image input"
# Errors about one bad image ("You uploaded an unsupported image", "illegal base64 data", "At
# most 1 image(s) may be provided") are not refusals: the model would take another image.
_REFUSAL = re.compile(
    r"image_url is only supported"
    r"|not an? multi-?modal model|is not multi-?modal"
    r"|(?:not|n't|cannot|can't) (?:support|accept|handle|process) (?:images?|vision|multi-?modal)"
    r"|support image input"
    r"|(?:images?|vision|multi-?modal)(?: (?!format|size|type|file|url|data)\w+){0,2}"
    r" (?:is|are) not (?:supported|enabled|available)"
    r"|unknown variant `?image_url"
    r"|text[- ]only model|only text input",
    re.IGNORECASE,
)


def has_images(turns: Sequence[ChatTurn]) -> bool:
    return any(turn.images for turn in turns)


class VisionPolicy:
    """`llm.vision` for one model client: whether a request's images go as image parts."""

    def __init__(self, vision: Literal["auto"] | bool) -> None:
        self.vision = vision
        self._text_only: set[str] = set()

    def note_for(self, model: str) -> str | None:
        """None when images go to `model`; otherwise the note that stands in for each one."""
        if self.vision is False:
            return VISION_OFF
        if self.vision == "auto" and model in self._text_only:
            return NOT_ACCEPTED
        return None

    def refused(self, model: str, status: int, message: str) -> bool:
        """Whether an HTTP error to a request that carried images says that `model` takes none;
        under "auto" the model is then remembered as text-only (and logged, once)."""
        if self.vision != "auto" or status not in (400, 415, 422):
            return False
        if not _REFUSAL.search(message):
            return False
        if model not in self._text_only:
            self._text_only.add(model)
            log.warning(
                "the model %r does not accept images (%s): its requests go without them from now "
                "on (set llm.vision = false to skip the first attempt)",
                model,
                message[:200],
            )
        return True


async def wire_messages(
    turns: Sequence[ChatTurn], note: str | None, names: ToolNames | None = None
) -> list[dict[str, Any]]:
    """The `messages` of a request: turns with images as content parts, or (with `note`) their
    images replaced by that note in the text. Tool turns go with the request's tool `names`;
    without them (no tools offered) they are left out (`adapters.llm.tools.tool_message`)."""
    if note is None and sum(len(i.data) for t in turns for i in t.images) > _ENCODE_IN_THREAD_FROM:
        return await asyncio.to_thread(_messages, turns, None, names)
    return _messages(turns, note, names)


def _messages(
    turns: Sequence[ChatTurn], note: str | None, names: ToolNames | None
) -> list[dict[str, Any]]:
    messages = []
    for turn in turns:
        if not is_tool_turn(turn):
            messages.append(_message(turn, note))
        elif (message := tool_message(turn, names)) is not None:
            messages.append(message)
    return messages


def _message(turn: ChatTurn, note: str | None) -> dict[str, Any]:
    role = turn.role.value
    if not turn.images:
        return {"role": role, "content": turn.content}
    if note is not None:
        notes = " ".join([note] * len(turn.images))
        return {"role": role, "content": f"{turn.content}\n\n{notes}" if turn.content else notes}
    parts: list[dict[str, Any]] = [{"type": "text", "text": turn.content}] if turn.content else []
    for image in turn.images:
        data = base64.b64encode(image.data).decode("ascii")
        parts.append(
            {"type": "image_url", "image_url": {"url": f"data:{image.mime_type};base64,{data}"}}
        )
    return {"role": role, "content": parts}
