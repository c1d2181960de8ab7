"""One reply's writer on the recording platform, on a virtual clock: the cap on its messages, the
closing notice within that cap, and layout work that does not grow with a runaway text."""

from __future__ import annotations

import asyncio
import re

import pytest

import bridge.writer
from bridge.ports import MessageLimit
from bridge.scheduler import EditScheduler
from bridge.segments import Layout, layout, utf8_length
from bridge.writer import ReplyWriter, WriterStyle
from sandbox.memory_platform import RecordingSurface
from tests.virtual_time import run_virtual

PARAGRAPH = "Every word of this paragraph takes room in a message. " * 6  # 324 chars
CJK = "日本語のテキストは一文字で三バイトを使います。" * 8  # 184 chars, 552 bytes
DEFAULT = WriterStyle()
NOTICE = "⚠️ _Reply cut: it outgrew the messages one reply may use._"


def paragraphs(characters: int, unit: str = PARAGRAPH) -> str:
    return "\n\n".join([unit] * (characters // (len(unit) + 2) + 1))


def slack_like() -> RecordingSurface:
    surface = RecordingSurface(name="slack")
    surface.message_limit = MessageLimit(3_500, "utf8_bytes")
    return surface


def words(text: str) -> str:
    return re.sub(r"\s+", "", text)


async def write(
    surface: RecordingSurface,
    text: str,
    *,
    style: WriterStyle = DEFAULT,
    chunk: int = 200,
    notice: str = "",
) -> ReplyWriter:
    """Stream `text` into a writer at 200 characters per 10 ms, then finish it with `notice`."""
    writer = ReplyWriter(surface, EditScheduler(interval=1.0), style=style)
    await writer.open()
    for start in range(0, len(text), chunk):
        writer.feed(text[start : start + chunk])
        await asyncio.sleep(0.01)
    await writer.finish(notice)
    return writer


def shown(surface: RecordingSurface) -> list[str]:
    return [surface.shown[message] for message in sorted(surface.shown, key=_number)]


def _number(message_id: str) -> int:
    return int(message_id.rsplit("-", 1)[1])


def test_a_text_of_fifty_messages_shows_exactly_max_messages_and_nothing_beyond() -> None:
    text = paragraphs(50 * 2000)
    seen_full: list[bool] = []

    async def scenario() -> None:
        surface = RecordingSurface(limit=2000)
        # Five messages' worth first: not full yet.
        writer = ReplyWriter(surface, EditScheduler(interval=1.0))
        await writer.open()
        half = len(paragraphs(5 * 2000))
        for start in range(0, len(text), 200):
            writer.feed(text[start : start + 200])
            await asyncio.sleep(0.01)
            if start == half - half % 200:
                seen_full.append(writer.full)
        await asyncio.sleep(2.0)  # an edit slot or two after the last delta
        seen_full.append(writer.full)
        await writer.finish()

        messages = shown(surface)
        assert len(messages) == 10 and surface.posts == 10
        assert {w.message_id for w in surface.writes} == set(surface.shown)
        assert all(len(m) <= 2000 for m in messages)
        assert all("▌" not in m for m in messages)
        # The beginning of the reply, in order; the rest is not shown.
        visible = words("".join(messages))
        assert words(text).startswith(visible) and len(visible) > 0.8 * 10 * len(words(text)) / 50
        assert writer.full and writer.text == text  # everything fed is kept (and stored)

    run_virtual(scenario())
    assert seen_full == [False, True]


def test_a_reply_within_the_cap_is_not_full_and_shows_all_of_its_text() -> None:
    text = paragraphs(int(2.5 * 2000))

    async def scenario() -> None:
        surface = RecordingSurface(limit=2000)
        writer = await write(surface, text, style=WriterStyle(max_messages=3))
        messages = shown(surface)
        assert not writer.full and len(messages) == 3
        assert words("".join(messages)) == words(text)

    run_virtual(scenario())


def test_a_full_reply_ends_with_its_notice_in_the_last_allowed_message() -> None:
    async def scenario() -> None:
        surface = RecordingSurface(limit=2000)
        writer = await write(surface, paragraphs(50 * 2000), notice=NOTICE)
        messages = shown(surface)
        assert writer.full and len(messages) == 10
        assert messages[-1].endswith(f"\n\n{NOTICE}")
        assert all(len(m) <= 2000 for m in messages)

    run_virtual(scenario())


def test_a_notice_longer_than_its_room_is_cut_short_rather_than_take_another_message() -> None:
    notice = "⚠️ _Reply cut: " + "a very long explanation " * 60 + "_"

    async def scenario() -> None:
        surface = RecordingSurface(limit=2000)
        await write(surface, paragraphs(50 * 2000), notice=notice)
        messages = shown(surface)
        assert len(messages) == 10 and len(messages[-1]) <= 2000
        assert "⚠️ _Reply cut: a very long" in messages[-1] and messages[-1].endswith("…")

    run_virtual(scenario())


@pytest.mark.parametrize("messages_worth", [8.6, 9.0, 9.4, 9.7, 9.85, 9.95, 10.1, 11.0])
def test_near_the_cap_the_notice_never_adds_a_message(messages_worth: float) -> None:
    """Whether the text just fits, fills the last allowed message or outgrows it, the notice of a
    few hundred characters is shown whole and no message beyond the cap is posted."""
    text = paragraphs(int(messages_worth * 1990))
    notice = NOTICE + " " + "x" * (300 - len(NOTICE) - 1)

    async def scenario() -> None:
        surface = RecordingSurface(limit=2000)
        await write(surface, text, notice=notice)
        messages = shown(surface)
        assert len(messages) <= 10 and surface.posts == len(messages)
        assert messages[-1].endswith(notice)
        assert all(len(m) <= 2000 for m in messages)

    run_virtual(scenario())


def test_a_notice_that_does_not_fit_below_the_text_takes_a_message_of_its_own() -> None:
    text = "word " * 395  # 1,975 characters: one message, nearly full

    async def scenario() -> None:
        surface = RecordingSurface(limit=2000)
        await write(surface, text, notice=NOTICE)
        assert shown(surface) == [text, NOTICE]

    run_virtual(scenario())


def test_utf8_byte_limits_cap_a_cjk_reply_with_its_notice() -> None:
    async def scenario() -> None:
        surface = slack_like()
        writer = await write(surface, paragraphs(50 * 1200, CJK), notice=NOTICE)
        messages = shown(surface)
        assert writer.full and len(messages) == 10
        assert all(utf8_length(m) <= 3500 for m in messages)
        assert messages[-1].endswith(NOTICE)

    run_virtual(scenario())


def test_a_runaway_text_costs_no_more_layout_than_the_cap_however_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Five million characters, half of them CJK, on a limit in UTF-8 bytes: the layout measures
    less text than the reply holds, once (before, every write measured all of it, many times)."""
    measured = [0]

    def counting_utf8_length(text: str) -> int:
        measured[0] += len(text)
        return utf8_length(text)

    text = paragraphs(5_000_000, PARAGRAPH + "\n\n" + CJK)
    assert len(text) >= 5_000_000

    async def scenario() -> None:
        surface = slack_like()
        writer = await write(surface, text, chunk=5_000)
        assert writer.full and len(shown(surface)) == 10
        assert len(writer.text) == len(text)

    monkeypatch.setattr(bridge.writer, "utf8_length", counting_utf8_length)
    run_virtual(scenario())
    assert 0 < measured[0] < 1_000_000, measured[0]


def test_full_is_exact_after_every_delta_without_laying_out_on_every_delta(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The responder asks after each delta, to stop the model as soon as the text outgrew the
    cap: the answer matches a layout of all the text fed, yet most asks cost no layout."""
    measured = [0]

    def counting_utf8_length(text: str) -> int:
        measured[0] += len(text)
        return utf8_length(text)

    monkeypatch.setattr(bridge.writer, "utf8_length", counting_utf8_length)
    style = WriterStyle(max_messages=3)
    text = paragraphs(5 * 1200, PARAGRAPH + "\n\n" + CJK)

    async def scenario() -> None:
        writer = ReplyWriter(slack_like(), EditScheduler(interval=1.0), style=style)
        answers = []
        for start in range(0, len(text), 3):
            writer.feed(text[start : start + 3])
            answers.append(writer.full)
        fed = [text[: start + 3] for start in range(0, len(text), 3)]
        expected = [reference_full(prefix, style) for prefix in fed]
        assert answers == expected and True in answers and False in answers
        assert measured[0] < 30 * len(text), measured[0]  # not one message's worth per delta

    run_virtual(scenario())


def reference_full(text: str, style: WriterStyle) -> bool:
    fresh = Layout(
        3_500,
        reserve=len(style.cursor) + 2,
        measure=utf8_length,
        max_segments=style.max_messages,
        last_reserve=style.notice_room,
    )
    fresh.extend(text)
    return fresh.full


def test_a_reply_of_two_hundred_messages_shows_exactly_its_layout() -> None:
    """Without a cap in reach, every message ends as `layout` of the whole text has it, although
    the writer only ever laid out the text's tail."""
    code = "```python\n" + "\n".join(f"value_{i} = compute({i})" for i in range(400)) + "\n```\n\n"
    text = code + paragraphs(200 * 2000, PARAGRAPH + "\n\n" + CJK)

    async def scenario() -> None:
        surface = RecordingSurface(limit=2000)
        writer = await write(surface, text, style=WriterStyle(max_messages=1000), chunk=997)
        expected = layout(text, 2000, reserve=len(writer.style.cursor) + 2)
        assert len(expected) > 200 and not writer.full
        assert shown(surface) == [segment.final() for segment in expected]

    run_virtual(scenario())
