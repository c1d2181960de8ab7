"""A local OpenAI-compatible LLM server that streams scripted replies and injects faults.

Used by the integration tests, the offline sandbox and the streaming benchmarks.
"""

from .content import NO_VISION_MESSAGE, image_urls, message_text
from .script import (
    Fault,
    FaultKind,
    Responder,
    ScriptedReply,
    echo_reply,
    lorem_reply,
    lorem_responder,
    reasoning_responder,
    split_tokens,
)
from .server import LLMServer
from .stream import LLMServerStats

__all__ = [
    "NO_VISION_MESSAGE",
    "Fault",
    "FaultKind",
    "LLMServer",
    "LLMServerStats",
    "Responder",
    "ScriptedReply",
    "echo_reply",
    "image_urls",
    "lorem_reply",
    "lorem_responder",
    "message_text",
    "reasoning_responder",
    "split_tokens",
]
