"""Long replies over several messages: limits, boundaries, fences, stability while growing."""

from __future__ import annotations

import random
import re
from collections.abc import Callable

import pytest

from bridge.segments import (
    Layout,
    Measure,
    Segment,
    clip,
    layout,
    open_fence_at_end,
    utf8_length,
)

FENCE_LINE = re.compile(r"^ {0,3}```.*$", re.MULTILINE)


def long_reply() -> str:
    prose = "\n\n".join(f"Paragraph {i}. " + "word " * 60 for i in range(8))
    code = "\n".join(f"    value_{i} = compute({i})  # step {i}" for i in range(90))
    return f"{prose}\n\n```python\ndef main():\n{code}\n```\n\nThat is all. " + "end " * 50


def strip_layout(text: str) -> str:
    return re.sub(r"\s+", "", FENCE_LINE.sub("", text))


def test_short_text_is_one_segment() -> None:
    [segment] = layout("hello", 2000)
    assert segment.text == "hello" and segment.open_fence is None


def test_a_5000_char_reply_with_code_fits_2000_char_messages_with_fences_balanced() -> None:
    text = long_reply()
    assert len(text) > 5000
    segments = layout(text, 2000)
    assert len(segments) >= 3
    for segment in segments:
        assert len(segment.final()) <= 2000
        assert open_fence_at_end(segment.final()) is None
    assert strip_layout("".join(s.final() for s in segments)) == strip_layout(text)
    reopened = [s.text for s in segments if s.text.startswith("```python\n")]
    assert reopened, "a block split across messages is reopened with its language"


def test_splits_prefer_paragraph_boundaries() -> None:
    text = ("a" * 50 + " ") * 10 + "\n\n" + ("b" * 50 + " ") * 30
    first = layout(text, 1000)[0]
    assert first.text.endswith("a") and "b" not in first.text


def test_earlier_segments_never_change_as_the_text_grows() -> None:
    text = long_reply()
    settled: dict[int, str] = {}
    for end in range(100, len(text), 37):
        segments = layout(text[:end], 1500, reserve=4)
        for index, segment in enumerate(segments[:-1]):
            assert settled.setdefault(index, segment.text) == segment.text
    assert len(settled) >= 3


def test_streaming_form_fits_and_closes_an_open_block() -> None:
    text = "Intro\n\n```js\nconsole.log(1)"
    [segment] = layout(text, 2000, reserve=2)
    assert segment.open_fence == "```js"
    assert segment.while_streaming(" ▌") == text + "\n```"
    assert segment.final() == text + "\n```"


def test_byte_limits_for_multibyte_text() -> None:
    text = "\n".join("日本語のテキスト " * 20 for _ in range(30))
    segments = layout(text, 3500, measure=utf8_length)
    assert all(utf8_length(s.final()) <= 3500 for s in segments)
    assert strip_layout("".join(s.text for s in segments)) == strip_layout(text)


def test_too_small_a_limit_is_refused() -> None:
    with pytest.raises(ValueError):
        layout("x" * 100, 20)


# --- the incremental layout ------------------------------------------------------------------


def random_reply(rng: random.Random, length: int) -> str:
    """Prose, CJK, emoji, blank lines, long unbroken lines and fenced blocks, mixed at random."""
    pieces: list[str] = []
    size = 0
    while size < length:
        kind = rng.random()
        if kind < 0.25:
            piece = "word " * rng.randint(1, 60)
        elif kind < 0.45:
            piece = "日本語のテキストです。" * rng.randint(1, 80)
        elif kind < 0.55:
            piece = "\n" * rng.choice([1, 2, 3, rng.randint(4, 3000)])
        elif kind < 0.65:
            piece = (
                rng.choice(["\n```python\n", "\n```\n", "\n~~~\n", "\n````js\n", "\n```"]) + "\n"
            )
        elif kind < 0.75:
            piece = "x" * rng.randint(100, 4000)  # a line with no boundary to split at
        elif kind < 0.85:
            piece = "End of a sentence. "
        else:
            piece = "😀é" * rng.randint(1, 60)
        pieces.append(piece)
        size += len(piece)
    return "".join(pieces)


def grown(text: str, rng: random.Random, whole: Layout) -> Layout:
    """`whole` fed `text` as a stream does, in additions of random lengths (some empty)."""
    end = 0
    while end < len(text):
        step = rng.choice([0, 1, 3, 40, 700, 5000])
        whole.extend(text[end : end + step])
        end += step
    whole.extend("")  # an empty text is one empty segment
    return whole


def reference_layout(text: str, limit: int, reserve: int, measure: Measure) -> list[Segment]:
    """The layout as first written, the specification: from the start, measuring all the rest at
    every segment (quadratic in the text's length)."""
    budget = limit - reserve - len("\n```")
    segments: list[Segment] = []
    start, carried = 0, None
    while True:
        prefix = f"{carried}\n" if carried else ""
        room = budget - measure(prefix)
        rest = text[start:]
        if measure(rest) <= room:
            return [*segments, Segment(prefix + rest, open_fence_at_end(rest, carried))]
        cut = max(n for n in range(min(len(rest), room) + 1) if measure(rest[:n]) <= room)
        end = cut
        for separator in ("\n\n", "\n", ". ", " "):
            index = rest[:cut].rfind(separator)
            if index > cut // 3:
                end = index + len(separator)
                break
        raw = rest[:end]
        fence = open_fence_at_end(raw, carried)
        body = prefix + (raw.rstrip("\n") if fence else raw.rstrip())
        if fence is not None:
            body += "\n" + fence[: len(fence) - len(fence.lstrip(fence[0]))]
        segments.append(Segment(body, None))
        start += end
        while start < len(text) and text[start] == "\n" and fence is None:
            start += 1
        carried = fence


@pytest.mark.parametrize("seed", range(6))
def test_growing_a_text_in_random_steps_lays_it_out_as_layout_does(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(25):
        text = random_reply(rng, rng.randint(0, 25_000))
        limit = rng.choice([120, 500, 2000, 3500])
        measure = rng.choice([len, utf8_length])
        whole = grown(text, rng, Layout(limit, reserve=4, measure=measure))
        expected = reference_layout(text, limit, 4, measure)
        assert layout(text, limit, reserve=4, measure=measure) == expected
        assert whole.segments == expected
        assert whole.complete == expected[:-1] and not whole.full
        for segment in expected:
            assert measure(segment.final()) <= limit


@pytest.mark.parametrize("seed", range(4))
def test_a_capped_layout_is_the_uncapped_one_cut_at_its_last_allowed_segment(seed: int) -> None:
    rng = random.Random(100 + seed)
    for _ in range(25):
        text = random_reply(rng, rng.randint(0, 25_000))
        limit, cap = rng.choice([500, 2000, 3500]), rng.randint(1, 6)
        measure = rng.choice([len, utf8_length])
        capped = grown(text, rng, capped_layout(limit, measure, cap))
        uncapped = layout(text, limit, reserve=4, measure=measure)
        assert len(capped.segments) <= cap
        # Before the last allowed segment, nothing differs from the uncapped layout.
        assert capped.segments[: cap - 1] == uncapped[: cap - 1]
        once = capped_layout(limit, measure, cap)
        once.extend(text)
        assert capped.segments == once.segments and capped.full == once.full
        if capped.full:
            assert len(capped.complete) == cap and capped.tail is None
            assert len(uncapped) > cap - 1
        else:
            assert capped.segments == uncapped
        for segment in capped.segments[cap - 1 :]:
            # The last allowed segment keeps the notice's room free.
            assert measure(segment.final()) <= limit - min(300, (limit - 8) // 2)


def capped_layout(limit: int, measure: Callable[[str], int], cap: int) -> Layout:
    return Layout(limit, reserve=4, measure=measure, max_segments=cap, last_reserve=300)


def test_a_capped_layout_ignores_text_beyond_the_cap() -> None:
    capped = Layout(2000, max_segments=3)
    capped.extend("word " * 2000)
    assert capped.full and len(capped.segments) == 3
    before = capped.segments
    capped.extend("more " * 10_000)
    assert capped.segments == before and capped.full


class CountingMeasure:
    """A measure that adds up the characters it was asked to measure: the layout's work."""

    def __init__(self, inner: Callable[[str], int]) -> None:
        self.inner = inner
        self.characters = 0

    def __call__(self, text: str) -> int:
        self.characters += len(text)
        return self.inner(text)


def test_each_step_measures_about_one_message_however_long_the_text() -> None:
    measure = CountingMeasure(utf8_length)
    growing = Layout(3500, reserve=4, measure=measure)
    text = "\n\n".join("日本語のテキスト " * 40 + "plain words " * 40 for _ in range(2500))
    assert len(text) > 1_000_000
    work: list[int] = []
    for start in range(0, len(text), 2_000):
        before = measure.characters
        growing.extend(text[start : start + 2_000])
        work.append(measure.characters - before)
    assert len(growing.segments) > 500
    # A 2,000-character step measures at most a few messages' worth of text (a binary search of
    # the last one), at 20 kB as at 1 MB: not the whole text after the last split.
    early, late = max(work[5:50]), max(work[-50:])
    assert late <= 20 * 3500 and late <= 2 * early, (early, late)


def test_laying_out_a_long_text_at_once_measures_it_a_bounded_number_of_times() -> None:
    measure = CountingMeasure(utf8_length)
    text = "日本語のテキスト。" * 200_000  # 1.8 M characters without a line break
    segments = layout(text, 3500, measure=measure)
    assert len(segments) > 1_000
    assert measure.characters <= 20 * len(text)  # before: the whole rest once per segment


def test_a_fence_line_as_long_as_a_message_still_makes_progress() -> None:
    text = "Intro\n```" + "prose after the backticks " * 200 + "\nmore\n" + "word " * 2000
    for measure in (len, utf8_length):
        segments = layout(text, 3500, measure=measure)
        assert len(segments) < 10  # not one message per few characters
        assert all(measure(s.final()) <= 3500 for s in segments)


def test_clip_cuts_with_an_ellipsis_within_the_room() -> None:
    assert clip("short", 10) == "short"
    assert clip("a long notice " * 10, 20) == "a long notice a lon…"
    cut = clip("日本語" * 100, 30, utf8_length)
    assert cut.endswith("…") and utf8_length(cut) <= 30
