"""Laying out a reply's text over several platform messages when it outgrows one.

`layout` is deterministic and stable as the text grows: once a segment is followed by another, its
content never changes, because it depends only on a prefix of the text that is already complete.
`Layout` relies on that to follow a growing text with work proportional to what changed: it keeps
the complete segments and lays out again only from the start of the last one. Every step looks at
most one message's worth of text, so a reply of millions of characters costs no more per segment
than a short one, and a cap on the number of segments bounds the whole.
Splits prefer a paragraph break, then a line break, then a sentence or word boundary; a split inside
a fenced code block closes the fence and reopens it, with its language, in the next message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

Measure = Callable[[str], int]

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})([^`\n]*)$", re.MULTILINE)
_NEWLINES = re.compile(r"\n*")
_CLOSE_RESERVE = "\n```"
_ELLIPSIS = "…"


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
    whole = Layout(limit, reserve=reserve, measure=measure)
    whole.extend(text)
    return whole.segments


class Layout:
    """`layout` of a text that only grows, kept up to date by `extend` with each addition.

    Only the text from the start of the last segment is kept: complete segments are never laid
    out again, so an addition costs about its own length plus one message, not the whole text.

    With `max_segments`, at most that many segments are laid out: when the text needs more, the
    last allowed one is cut like any segment followed by another, `full` turns True, and later text
    is ignored. `last_reserve` is extra room kept free in that last allowed segment (for a closing
    notice); it is at most half a message.
    """

    def __init__(
        self,
        limit: int,
        *,
        reserve: int = 0,
        measure: Measure = len,
        max_segments: int | None = None,
        last_reserve: int = 0,
    ) -> None:
        self._budget = limit - reserve - len(_CLOSE_RESERVE)
        if self._budget < 40:
            raise ValueError(f"message limit {limit} is too small to lay out text")
        if max_segments is not None and max_segments < 1:
            raise ValueError("a layout needs room for at least one segment")
        self._measure = measure
        self._max_segments = max_segments
        self._last_reserve = min(max(last_reserve, 0), self._budget // 2)
        self.complete: list[Segment] = []  # followed by another segment: never change again
        self.tail: Segment | None = None  # the segment still growing; None before text or when full
        self.full = False
        self.length = 0  # characters of the text laid out
        # Room left in the tail, in the measure's unit: text measuring at most this much can be
        # added without a split (so without the layout becoming full).
        self.headroom = 0
        self._rest = ""  # the text from the tail's start on
        self._carried: str | None = None  # fence open there, reopened at the top of the tail

    @property
    def segments(self) -> list[Segment]:
        return self.complete if self.tail is None else [*self.complete, self.tail]

    def extend(self, more: str) -> None:
        """Lay out the text grown by `more`."""
        if self.full or (not more and self.tail is not None):
            return
        self.length += len(more)
        measure, carried = self._measure, self._carried
        text = self._rest + more
        start = 0
        if self.complete and carried is None:
            # A split outside a block drops the blank lines after it; more of them may have come.
            start = _past_newlines(text, 0)
        while True:
            prefix = _reopening(carried, self._budget, measure)
            room = self._budget - measure(prefix)
            last_allowed = len(self.complete) + 1 == self._max_segments
            if last_allowed:
                room -= self._last_reserve
            # Every character measures at least 1, so a text longer than `room` cannot fit: only
            # the first `room + 1` characters are ever measured, however long the text.
            head = text[start : start + room + 1]
            used = measure(head) if len(head) <= room else room + 1
            if used <= room:
                self.tail = Segment(prefix + head, open_fence_at_end(head, carried))
                self.headroom, self._rest = room - used, head
                return
            end = start + _split_index(head, room, measure)
            raw = text[start:end]
            fence = open_fence_at_end(raw, carried)
            body = prefix + raw.rstrip("\n") if fence else prefix + raw.rstrip()
            if fence is not None:
                body += f"\n{_fence_marker(fence)}"
            self.complete.append(Segment(body, None))
            self._carried = carried = fence
            if last_allowed:
                self.tail, self.full, self.headroom, self._rest = None, True, 0, ""
                return
            start = end if fence is not None else _past_newlines(text, end)


def clip(text: str, room: int, measure: Measure = len) -> str:
    """`text` cut short with an ellipsis where it would not fit in `room`."""
    if len(text) <= room and measure(text) <= room:
        return text
    room -= measure(_ELLIPSIS)
    if room <= 0:
        return ""
    return text[: _fitting_length(text[: room + 1], room, measure)].rstrip() + _ELLIPSIS


def _past_newlines(text: str, position: int) -> int:
    """Where the run of line breaks at `position` ends."""
    run = _NEWLINES.match(text, position)
    return run.end() if run else position


def _reopening(carried: str | None, budget: int, measure: Measure) -> str:
    """The line that reopens the block `carried` at the top of a segment.

    A fence line is normally a few characters; one as long as a message (the model wrote prose
    after the backticks) is reopened without its info string, so every segment keeps room to make
    progress.
    """
    if carried is None:
        return ""
    if measure(carried) < budget // 4:
        return f"{carried}\n"
    marker = _fence_marker(carried)
    return f"{marker}\n" if len(marker) < budget // 4 else ""


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
    if measure is utf8_length:
        # Encode once; the bytes that fit, less a character cut in half, are the longest prefix.
        encoded = text[:room].encode("utf-8")
        if len(encoded) <= room:
            return min(len(text), room)
        return len(encoded[:room].decode("utf-8", "ignore"))
    low, high = 0, min(len(text), room)
    while low < high:
        middle = (low + high + 1) // 2
        if measure(text[:middle]) <= room:
            low = middle
        else:
            high = middle - 1
    return low
