"""A tool's result as the text the model reads: its text parts, a short note for each other part
(an image, a resource), its structured content as JSON when it has no text.
"""

from __future__ import annotations

import json

import mcp_types as types

from bridge.ports import ToolFailed


def result_text(name: str, result: types.CallToolResult) -> str:
    """The result of the tool `name` as text; ToolFailed when the tool reported an error."""
    parts = [_part_text(part) for part in result.content]
    has_text = any(isinstance(part, types.TextContent) for part in result.content)
    if not has_text and result.structured_content is not None:
        parts.insert(0, json.dumps(result.structured_content, ensure_ascii=False, default=str))
    text = "\n\n".join(part for part in parts if part)
    if result.is_error:
        raise ToolFailed(text or f"the tool '{name}' reported an error")
    return text


def _part_text(part: types.ContentBlock) -> str:
    if isinstance(part, types.TextContent):
        return part.text
    if isinstance(part, types.ImageContent):
        return f"[image {part.mime_type}, {_size(_decoded_length(part.data))}]"
    if isinstance(part, types.AudioContent):
        return f"[audio {part.mime_type}, {_size(_decoded_length(part.data))}]"
    if isinstance(part, types.ResourceLink):
        return f"[resource {part.uri}]"
    if isinstance(part, types.EmbeddedResource):
        resource = part.resource
        if isinstance(resource, types.TextResourceContents):
            return f"[resource {resource.uri}]\n{resource.text}"
        kind = f" {resource.mime_type}" if resource.mime_type else ""
        return f"[resource {resource.uri}{kind}, {_size(_decoded_length(resource.blob))}]"
    return f"[{getattr(part, 'type', 'content')}]"


def _decoded_length(base64_data: str) -> int:
    """Bytes of base64 data, without decoding it."""
    data = base64_data.strip()
    return max(0, len(data) * 3 // 4 - data[-2:].count("="))


def _size(length: int) -> str:
    if length < 1024:
        return f"{length} B"
    if length < 1024 * 1024:
        return f"{round(length / 1024)} KB"
    return f"{length / (1024 * 1024):.1f} MB"
