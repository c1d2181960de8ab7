"""How a tool's result reads to the model: text parts, notes for the other parts, JSON for
structured content without text, and error results as ToolFailed."""

from __future__ import annotations

import base64

import mcp_types as types
import pytest

from adapters.mcp.results import result_text
from bridge.ports import ToolFailed


def _result(*content: types.ContentBlock, **fields: object) -> types.CallToolResult:
    return types.CallToolResult(content=list(content), **fields)  # type: ignore[arg-type]


def test_text_parts_are_joined_with_blank_lines() -> None:
    result = _result(types.TextContent(text="first"), types.TextContent(text="second"))

    assert result_text("t.x", result) == "first\n\nsecond"


def test_other_parts_are_described_briefly() -> None:
    png = base64.b64encode(b"\x89PNG" + bytes(12 * 1024 - 4)).decode()
    result = _result(
        types.TextContent(text="the chart:"),
        types.ImageContent(data=png, mime_type="image/png"),
        types.AudioContent(data=base64.b64encode(b"RIFF").decode(), mime_type="audio/wav"),
        types.ResourceLink(name="report", uri="file:///tmp/report.pdf"),
        types.EmbeddedResource(
            resource=types.TextResourceContents(uri="memo://1", text="the memo")
        ),
    )

    assert result_text("t.x", result) == (
        "the chart:\n\n[image image/png, 12 KB]\n\n[audio audio/wav, 4 B]\n\n"
        "[resource file:///tmp/report.pdf]\n\n[resource memo://1]\nthe memo"
    )


def test_structured_content_is_json_when_there_is_no_text() -> None:
    result = _result(structured_content={"temperature": 21.5, "unit": "°C"})

    assert result_text("t.x", result) == '{"temperature": 21.5, "unit": "°C"}'


def test_structured_content_is_left_out_beside_text() -> None:
    result = _result(types.TextContent(text="21.5 °C"), structured_content={"t": 21.5})

    assert result_text("t.x", result) == "21.5 °C"


def test_an_error_result_raises_with_its_text() -> None:
    with pytest.raises(ToolFailed, match="^no such city$") as failed:
        result_text("t.x", _result(types.TextContent(text="no such city"), is_error=True))
    assert not failed.value.timed_out

    with pytest.raises(ToolFailed, match="'t.x' reported an error"):
        result_text("t.x", _result(is_error=True))
