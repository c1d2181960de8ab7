"""Long replies over several messages: limits, boundaries, fences, stability while growing."""

from __future__ import annotations

import re

import pytest

from bridge.segments import layout, open_fence_at_end, utf8_length

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
