"""Building the prompt: system prompt, then the newest history that fits the token budget.

Tokens are estimated locally (no tokenizer download at run time) and the estimate is corrected by
the prompt_tokens each server reports, per model, so the budget tracks the real tokenizer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bridge.domain import Role, StoredMessage
from bridge.ports import ChatTurn, ImagePart, ToolCall
from bridge.reasoning import without_summary
from bridge.tools.loop import without_footer

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

    A reply's tool rounds (`ChatStore.add_tool_round`) go back as the model made them: the
    assistant turn with the calls, then one tool turn per result. A round is sent whole or not
    at all: one that does not fit is left out and older messages may still be sent, whereas a
    message that does not fit ends the history there. A round whose calls cannot be read, or
    whose results are not all there (cut by the history's limit), is left out.
    """
    turns: list[ChatTurn] = []
    used = budget.estimate(model, system_prompt) if system_prompt else 0
    # A deleted message's reply goes with it (and its tool rounds): two assistant turns in a
    # row are refused by chat templates that require the roles to alternate.
    deleted = {m.id for m in history if m.metadata.get("deleted")}
    kept = [
        m
        for m in history
        if m.id not in deleted and (m.reply_to_id is None or m.reply_to_id not in deleted)
    ]
    newest = True
    for unit in reversed(_units(kept)):
        if isinstance(unit, _Round):
            cost = sum(_tool_turn_cost(budget, model, turn) for turn in unit.turns)
            if used + cost <= max_tokens:
                turns.extend(reversed(unit.turns))
                used += cost
            continue
        message = unit
        content = message.content
        images: tuple[ImagePart, ...] = ()
        if message.role is Role.ASSISTANT:
            content = without_footer(without_summary(content, message.metadata), message.metadata)
        elif files and message.id in files:
            extra, images = files[message.id]
            content = f"{content}\n\n{extra}" if content and extra else (content or extra)
        cost = budget.estimate(model, content) + IMAGE_TOKENS * len(images)
        if not newest and used + cost > max_tokens:
            break
        newest = False
        role = Role.ASSISTANT if message.role is Role.ASSISTANT else Role.USER
        turns.append(ChatTurn(role, content, images))
        used += cost
    turns.reverse()
    if system_prompt:
        turns.insert(0, ChatTurn(Role.SYSTEM, system_prompt))
    return turns, used


@dataclass(frozen=True, slots=True)
class _Round:
    """One tool round of a reply as turns: the calls, then their results in call order."""

    turns: tuple[ChatTurn, ...]


def _units(history: Sequence[StoredMessage]) -> list[StoredMessage | _Round]:
    """The history in order, each tool round gathered into one unit (the store keeps a round's
    rows together: its calls, then their results)."""
    units: list[StoredMessage | _Round] = []
    index = 0
    while index < len(history):
        message = history[index]
        index += 1
        if message.role is Role.TOOL:
            continue  # results whose calls are not in the history (cut by its limit)
        if message.role is not Role.ASSISTANT or "tool_calls" not in message.metadata:
            units.append(message)
            continue
        end = index
        while end < len(history) and history[end].role is Role.TOOL:
            end += 1
        tool_round = _round(message, history[index:end])
        if tool_round is not None:
            units.append(tool_round)
        index = end
    return units


def _round(calls_row: StoredMessage, results: Sequence[StoredMessage]) -> _Round | None:
    """The round's turns; None when its calls cannot be read or do not match its results one
    for one, in order (ids may be empty or repeated: some servers send no call ids)."""
    stored = calls_row.metadata.get("tool_calls")
    if not isinstance(stored, list) or not stored or len(stored) != len(results):
        return None
    calls: list[ToolCall] = []
    for item, result in zip(stored, results, strict=True):
        if not isinstance(item, dict):
            return None
        call_id, name, arguments = item.get("id"), item.get("name"), item.get("arguments")
        if not (isinstance(call_id, str) and isinstance(name, str) and isinstance(arguments, str)):
            return None
        if result.metadata.get("tool_call_id") != call_id:
            return None
        calls.append(ToolCall(call_id, name, arguments))
    content = without_summary(calls_row.content, calls_row.metadata)
    return _Round(
        (
            ChatTurn(Role.ASSISTANT, content, tool_calls=tuple(calls)),
            *(
                ChatTurn(Role.TOOL, result.content, tool_call_id=call.id)
                for call, result in zip(calls, results, strict=True)
            ),
        )
    )


def _tool_turn_cost(budget: TokenBudget, model: str, turn: ChatTurn) -> int:
    # A call's name and arguments go to the model as text of the assistant's turn.
    calls = "\n".join(f"{call.name} {call.arguments}" for call in turn.tool_calls)
    return budget.estimate(model, f"{turn.content}\n{calls}" if calls else turn.content)
