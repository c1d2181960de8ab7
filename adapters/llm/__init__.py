"""The LLM side: any OpenAI-compatible endpoint, through the openai SDK.

`OpenAICompatibleModel` is imported when first asked for: the local LLM server imports
`adapters.llm.tools.wire_name` and must not pay for the openai SDK (a second of start-up).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapters.llm.openai_compatible import OpenAICompatibleModel

__all__ = ["OpenAICompatibleModel"]


def __getattr__(name: str) -> Any:
    if name == "OpenAICompatibleModel":
        from adapters.llm.openai_compatible import OpenAICompatibleModel

        return OpenAICompatibleModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
