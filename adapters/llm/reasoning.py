"""Splits the `<think>…</think>` blocks that local models inline in their content from the answer.

Reasoning servers send their thinking in a key of its own (`reasoning_content`, `reasoning`); a
local model served without a reasoning parser writes it into `content` between think tags. The
decoder hands a choice's content here once a "<" has shown up in it, so a plain answer never pays
for this.
"""

from __future__ import annotations

from bridge.ports import Delta, Reasoning, StreamEvent

OPEN = "<think>"
CLOSE = "</think>"


class ThinkBlocks:
    """One choice's content, split into reasoning (inside think blocks) and answer text.

    A think block is one only before the answer begins (models reason first): once any answer
    text was given, "<think>" is text like any other (an answer about the tag itself). A tag may
    arrive cut across deltas ("<thi" + "nk>"): a trailing piece that could still grow into the
    awaited tag is held back until the next delta or the end. A block that never closes is
    reasoning until the end. The blank lines a model puts between a block and its answer are
    dropped, so that the answer does not open with them.
    """

    __slots__ = ("inside", "answered", "_held", "_trim")

    def __init__(self, *, answered: bool = False) -> None:
        self.inside = False
        self.answered = answered
        self._held = ""
        self._trim = False

    def feed(self, index: int, text: str, out: list[StreamEvent]) -> None:
        """Append the events of one content delta of choice `index` to `out`."""
        if self._held:
            text = self._held + text
            self._held = ""
        while text:
            if self.answered and not self.inside:
                self._emit(index, text, out)
                return
            tag = CLOSE if self.inside else OPEN
            at = text.find(tag)
            if at > 0 and not self.inside and text[:at].strip():
                at = -1  # answer text before the tag: the tag is part of the answer
            if at < 0:
                # Each tag holds one "<", at its start: only the text from the last "<" on can
                # be the beginning of the tag.
                cut = text.rfind("<")
                if cut >= 0 and len(text) - cut < len(tag) and tag.startswith(text[cut:]):
                    self._held = text[cut:]
                    text = text[:cut]
                self._emit(index, text, out)
                return
            self._emit(index, text[:at], out)
            text = text[at + len(tag) :]
            self.inside = not self.inside
            self._trim = not self.inside

    def end(self, index: int, out: list[StreamEvent]) -> None:
        """The choice finished or the stream ended: a piece held back was text after all."""
        held, self._held = self._held, ""
        self._emit(index, held, out)

    def _emit(self, index: int, text: str, out: list[StreamEvent]) -> None:
        if not text:
            return
        if self.inside:
            out.append(Reasoning(index, text))
            return
        if self._trim:
            text = text.lstrip()
            if not text:
                return
            self._trim = False
        if text.strip():
            self.answered = True
        out.append(Delta(index, text))


def strip_think_blocks(text: str) -> str:
    """A whole (non-streamed) answer without its think blocks."""
    if "<" not in text:
        return text
    blocks = ThinkBlocks()
    events: list[StreamEvent] = []
    blocks.feed(0, text, events)
    blocks.end(0, events)
    return "".join(event.text for event in events if isinstance(event, Delta))
