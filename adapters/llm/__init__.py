"""The LLM side: any OpenAI-compatible endpoint, through the openai SDK."""

from adapters.llm.openai_compatible import OpenAICompatibleModel

__all__ = ["OpenAICompatibleModel"]
