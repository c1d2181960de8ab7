"""A reasoning model's thinking phase as the user sees it (`streaming.show_reasoning`).

Reasoning never becomes reply text. While the model reasons, the reply shows a live
"thinking… 12 s" (in the placeholder, and in the platform's own status line where it has one);
with "summary", a short summary of the reasoning is kept above the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from typing import Any

# How often the status says how long the model has been thinking. Each one is a platform write
# drawn from the reply's budget (an edit of the placeholder or a status call): seconds, not ticks.
STATUS_EVERY = 5.0
SUMMARY_CHARS = 280
_KEPT_CHARS = 4_000  # of the reasoning, for the summary; the rest is never held
_SPACE = re.compile(r"\s+")


def thinking_status(seconds: float) -> str:
    return f"thinking… {int(seconds)} s" if seconds >= 1 else "thinking…"


class Thinking:
    def __init__(
        self,
        mode: str,
        *,
        clock: Callable[[], float],
        show: Callable[[str], Awaitable[None]],
        every: float = STATUS_EVERY,
    ) -> None:
        self.mode = mode
        self._clock = clock
        self._show = show
        self._every = every
        self._started: float | None = None
        self._ended: float | None = None
        self._kept: list[str] = []
        self._kept_chars = 0
        self._ticker: asyncio.Task[None] | None = None
        self.prefix = ""

    @property
    def active(self) -> bool:
        return self._started is not None and self._ended is None

    @property
    def seconds(self) -> float:
        if self._started is None:
            return 0.0
        return (self._ended if self._ended is not None else self._clock()) - self._started

    def feed(self, text: str) -> None:
        if self._ended is not None:
            return  # reasoning after the answer began (some models interleave): not shown
        if self._started is None:
            self._started = self._clock()
            if self.mode != "off":
                self._ticker = asyncio.get_running_loop().create_task(self._tick())
        if self._kept_chars < _KEPT_CHARS:
            self._kept.append(text[: _KEPT_CHARS - self._kept_chars])
            self._kept_chars += len(self._kept[-1])

    def answer_begins(self) -> str:
        """The answer's first words arrived: the status ends; returns what goes above the
        answer ("" unless `summary`)."""
        if self._started is None or self._ended is not None:
            return ""
        self._ended = self._clock()
        self.close()
        if self.mode == "summary":
            self.prefix = summary_block(self.seconds, "".join(self._kept))
        self._kept.clear()
        return self.prefix

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def metadata(self) -> dict[str, Any] | None:
        """What the stored reply keeps of it: how long, and how many leading characters of
        its content are the summary (left out when the reply is sent back as context)."""
        if self._started is None:
            return None
        return {"seconds": round(self.seconds, 1), "summary_chars": len(self.prefix)}

    async def _tick(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self._show(thinking_status(0))
            while True:
                await asyncio.sleep(self._every)
                if not self.active:
                    return
                await self._show(thinking_status(self.seconds))


def summary_block(seconds: float, reasoning: str) -> str:
    """The "Thought for 12 s" line and the first sentences of the reasoning, quoted."""
    text = _SPACE.sub(" ", reasoning).strip()
    if len(text) > SUMMARY_CHARS:
        cut = text[:SUMMARY_CHARS]
        end = max(cut.rfind(". "), cut.rfind("? "), cut.rfind("! "))
        text = cut[: end + 1] if end >= SUMMARY_CHARS // 2 else cut.rsplit(" ", 1)[0] + "…"
    head = f"_Thought for {max(int(seconds), 1)} s_"
    return f"{head}\n> {text}\n\n" if text else f"{head}\n\n"


def without_summary(content: str, metadata: dict[str, Any]) -> str:
    """A stored reply's content as context: its reasoning summary left out."""
    reasoning = metadata.get("reasoning")
    if isinstance(reasoning, dict):
        chars = reasoning.get("summary_chars")
        if isinstance(chars, int) and 0 < chars <= len(content):
            return content[chars:]
    return content
