"""Building the prompt: system prompt, then the newest history that fits the token budget.

Tokens are estimated locally (no tokenizer download at run time) and the estimate is corrected by
the prompt_tokens each server reports, per model, so the budget tracks the real tokenizer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from bridge.domain import Role, StoredMessage
from bridge.ports import ChatTurn, ImagePart
from bridge.reasoning import without_summary

# Chat formats wrap each message in a few tokens of framing.
MESSAGE_OVERHEAD = 4
_PIECES = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate: about one token per 4 characters of a word, one per symbol."""
    count = 0
    for piece in _PIECES.findall(text):
        count += 1 if len(piece) <= 4 else (len(piece) + 3) // 4
    return count


class TokenBudget:
    """Estimates with a per-model correction learned from the usage servers report."""

    def __init__(self) -> None:
        self._ratio: dict[str, float] = {}

    def estimate(self, model: str, text: str) -> int:
        return int(estimate_tokens(text) * self._ratio.get(model, 1.0)) + MESSAGE_OVERHEAD

    def learn(self, model: str, estimated_prompt: int, reported_prompt: int) -> None:
        if estimated_prompt <= 0 or reported_prompt <= 0:
            return
        observed = reported_prompt / estimated_prompt * self._ratio.get(model, 1.0)
        previous = self._ratio.get(model)
        # Smooth: one odd prompt (images, tools) should not swing the budget.
        ratio = observed if previous is None else 0.7 * previous + 0.3 * observed
        self._ratio[model] = min(max(ratio, 0.25), 4.0)

    def ratio(self, model: str) -> float:
        return self._ratio.get(model, 1.0)


# What one image costs in the estimate (a downscaled image of about 2048 px a side).
IMAGE_TOKENS = 800

Files = Mapping[int, tuple[str, tuple[ImagePart, ...]]]


def build_prompt(
    budget: TokenBudget,
    model: str,
    system_prompt: str,
    history: Sequence[StoredMessage],
    max_tokens: int,
    files: Files | None = None,
) -> tuple[list[ChatTurn], int]:
    """The turns to send and their estimated token count. The newest message is always kept.

    `files`: per user message, the text naming (or inlining) its files and the images sent with
    it (`bridge.attachments`). Messages their authors deleted are left out; a reply's reasoning
    summary is not sent back.
    """
    turns: list[ChatTurn] = []
    used = budget.estimate(model, system_prompt) if system_prompt else 0
    # A deleted message's reply goes with it: two assistant turns in a row are refused by chat
    # templates that require the roles to alternate.
    deleted = {m.id for m in history if m.metadata.get("deleted")}
    for message in reversed(history):
        if message.id in deleted or (
            message.reply_to_id is not None and message.reply_to_id in deleted
        ):
            continue
        content = message.content
        images: tuple[ImagePart, ...] = ()
        if message.role is Role.ASSISTANT:
            content = without_summary(content, message.metadata)
        elif files and message.id in files:
            extra, images = files[message.id]
            content = f"{content}\n\n{extra}" if content and extra else (content or extra)
        cost = budget.estimate(model, content) + IMAGE_TOKENS * len(images)
        if turns and used + cost > max_tokens:
            break
        role = Role.ASSISTANT if message.role is Role.ASSISTANT else Role.USER
        turns.append(ChatTurn(role, content, images))
        used += cost
    turns.reverse()
    if system_prompt:
        turns.insert(0, ChatTurn(Role.SYSTEM, system_prompt))
    return turns, used
