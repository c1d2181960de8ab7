"""Laying out a reply's text over several platform messages when it outgrows one.

`layout` is deterministic and stable as the text grows: once a segment is followed by another, its
content never changes, because it depends only on a prefix of the text that is already complete.
Splits prefer a paragraph break, then a line break, then a sentence or word boundary; a split inside
a fenced code block closes the fence and reopens it, with its language, in the next message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

Measure = Callable[[str], int]

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})([^`\n]*)$", re.MULTILINE)
_CLOSE_RESERVE = "\n```"


def utf8_length(text: str) -> int:
    return len(text.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class Segment:
    text: str  # what the message shows when final
    open_fence: str | None  # the fence line (e.g. "```python") open at the end of the raw part

    def final(self) -> str:
        """What the message shows when complete; a block the model left open is closed."""
        if self.open_fence is not None:
            return f"{self.text}\n{_fence_marker(self.open_fence)}"
        return self.text

    def while_streaming(self, cursor: str) -> str:
        """What the message shows while more text may still come."""
        if self.open_fence is not None:
            # Close the block for display so the platform renders it as code meanwhile.
            return f"{self.text}\n{_fence_marker(self.open_fence)}"
        return self.text + cursor


def _fence_marker(fence_line: str) -> str:
    stripped = fence_line.strip()
    char = stripped[0]
    return char * (len(stripped) - len(stripped.lstrip(char)))


def open_fence_at_end(text: str, initially_open: str | None = None) -> str | None:
    """The fence line still open at the end of `text` (None when every block is closed)."""
    if "```" not in text and "~~~" not in text:
        return initially_open  # no fence line at all: the common case, without the regex scan
    current = initially_open
    for match in _FENCE.finditer(text):
        marker, info = match.group(1), match.group(2)
        if current is None:
            current = (marker + info).strip()
        elif marker[0] == _fence_marker(current)[0] and len(marker) >= len(_fence_marker(current)):
            if not info.strip():
                current = None
    return current


def layout(text: str, limit: int, *, reserve: int = 0, measure: Measure = len) -> list[Segment]:
    """Split `text` into segments whose final and streaming forms both fit in `limit`.

    `reserve` is room kept free in every segment (for a streaming cursor).
    """
    budget = limit - reserve - len(_CLOSE_RESERVE)
    if budget < 40:
        raise ValueError(f"message limit {limit} is too small to lay out text")
    segments: list[Segment] = []
    start = 0
    carried: str | None = None  # fence open at `start`, reopened at the top of the next segment
    while True:
        prefix = f"{carried}\n" if carried else ""
        room = budget - measure(prefix)
        rest = text[start:]
        if measure(rest) <= room:
            fence = open_fence_at_end(rest, carried)
            segments.append(Segment(prefix + rest, fence))
            return segments
        end = start + _split_index(rest, room, measure)
        raw = text[start:end]
        fence = open_fence_at_end(raw, carried)
        body = prefix + raw.rstrip("\n") if fence else prefix + raw.rstrip()
        if fence is not None:
            body += f"\n{_fence_marker(fence)}"
        segments.append(Segment(body, None))
        start = end
        while start < len(text) and text[start] == "\n" and fence is None:
            start += 1
        carried = fence


def _split_index(rest: str, room: int, measure: Measure) -> int:
    """Where to cut `rest` so that the head fits in `room`, preferring natural boundaries."""
    cut = _fitting_length(rest, room, measure)
    window = rest[:cut]
    floor = cut // 3  # never leave a message mostly empty just to reach a nicer boundary
    for separator in ("\n\n", "\n", ". ", " "):
        index = window.rfind(separator)
        if index > floor:
            return index + len(separator)
    return cut


def _fitting_length(text: str, room: int, measure: Measure) -> int:
    """The longest prefix length of `text` whose measure fits in `room`."""
    if measure is len:
        return min(len(text), room)
    low, high = 0, min(len(text), room)
    while low < high:
        middle = (low + high + 1) // 2
        if measure(text[:middle]) <= room:
            low = middle
        else:
            high = middle - 1
    return low
