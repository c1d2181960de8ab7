"""Rebuilds each reply's visible history from the recorded writes of a run.

A reply may span several platform messages (continuations), and several replies may share one
place (choices in a Discord channel); each message is told apart by its text, which is unique per
(conversation, choice), see `bench.reply_text`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from bench.records import VisibleWrite

_WINDOW = 24  # characters: long enough to be unique to one reply's text


@dataclass
class ReplyTimeline:
    """One reply (one choice of one conversation) as readers saw it."""

    conversation: int
    choice: int
    updates: list[tuple[float, int]] = field(default_factory=list)  # (time, visible chars)
    first_text_at: float | None = None
    final_at: float | None = None
    shown: str = ""  # the text of its messages at the end, markers removed

    @property
    def gaps(self) -> list[float]:
        """Seconds between consecutive visible updates, from the first text to the last."""
        first = self.first_text_at
        times = [at for at, _ in self.updates if first is not None and at >= first]
        return [b - a for a, b in zip(times, times[1:], strict=False)]

    @property
    def longest_stall(self) -> float:
        """The longest stretch in which the visible text did not grow, from the first text on."""
        grown: list[float] = []
        best = 0
        for at, chars in self.updates:
            if chars > best:
                best = chars
                grown.append(at)
        return max((b - a for a, b in zip(grown, grown[1:], strict=False)), default=0.0)


@dataclass(frozen=True, slots=True)
class Markers:
    """What a bot shows that is not reply text: its placeholder and its typing cursor."""

    placeholder: str
    cursor: str

    def strip(self, text: str) -> str:
        if self.cursor and text.endswith(self.cursor):
            text = text[: -len(self.cursor)]
        return "" if text.strip() == self.placeholder else text


def placeholders(writes: list[VisibleWrite], n: int) -> dict[str, list[float]]:
    """Per place, when each of its first `n` bot messages appeared (the replies' placeholders)."""
    seen: dict[str, list[float]] = defaultdict(list)
    for write in writes:
        if write.posted and len(seen[write.place]) < n:
            seen[write.place].append(write.at)
    return dict(seen)


def rebuild(
    writes: list[VisibleWrite],
    places: dict[str, int],
    texts: dict[tuple[int, int], str],
    n: int,
    markers: Markers,
) -> dict[tuple[int, int], ReplyTimeline]:
    """Every reply's timeline, keyed by (conversation, choice)."""
    owner: dict[str, tuple[int, int]] = {}
    for write in writes:
        if write.message_id in owner or write.place not in places:
            continue
        conversation = places[write.place]
        choice = 0 if n == 1 else _choice_of(markers.strip(write.text), conversation, texts, n)
        if choice is not None:
            owner[write.message_id] = (conversation, choice)

    timelines = {key: ReplyTimeline(*key) for key in texts}
    contents: dict[str, str] = {}
    order: dict[tuple[int, int], list[str]] = defaultdict(list)
    for write in writes:
        key = owner.get(write.message_id)
        if key is None:
            continue  # a placeholder that never showed text of its own
        if write.message_id not in contents:
            order[key].append(write.message_id)
        elif contents[write.message_id] == write.text:
            continue  # not a visible change
        contents[write.message_id] = write.text
        timeline = timelines[key]
        chars = sum(len(markers.strip(contents[m])) for m in order[key])
        timeline.updates.append((write.at, chars))
        if chars and timeline.first_text_at is None:
            timeline.first_text_at = write.at
        timeline.final_at = write.at
    for key, timeline in timelines.items():
        timeline.shown = "".join(markers.strip(contents[m]) for m in order[key])
    return timelines


def is_complete(shown: str, expected: str) -> bool:
    """Whether the reply's end is on screen (layout may re-wrap fences and whitespace)."""
    tail = "".join(expected.split())[-40:]
    return tail in "".join(shown.split())


def _choice_of(
    text: str, conversation: int, texts: dict[tuple[int, int], str], n: int
) -> int | None:
    if len(text) < _WINDOW:
        return None
    candidates = [(c, texts[(conversation, c)]) for c in range(n)]
    for start in (len(text) // 2 - _WINDOW // 2, 0, len(text) - _WINDOW):
        window = text[start : start + _WINDOW]
        hits = [choice for choice, full in candidates if window in full]
        if len(hits) == 1:
            return hits[0]
    return None
