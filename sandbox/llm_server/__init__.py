"""A local OpenAI-compatible LLM server that streams scripted replies and injects faults, and
plays a model that calls tools (directives for tests, the sandbox's demo: see ``tools``).

Used by the integration tests, the offline sandbox and the streaming benchmarks.
"""

from .content import NO_VISION_MESSAGE, image_urls, message_text
from .script import (
    Fault,
    FaultKind,
    Responder,
    ScriptedReply,
    ScriptedToolCall,
    echo_reply,
    lorem_reply,
    lorem_responder,
    reasoning_responder,
    split_tokens,
)
from .server import LLMServer
from .stream import LLMServerStats
from .tools import NO_TOOLS_MESSAGE, directives, tool_reply

__all__ = [
    "NO_TOOLS_MESSAGE",
    "NO_VISION_MESSAGE",
    "Fault",
    "FaultKind",
    "LLMServer",
    "LLMServerStats",
    "Responder",
    "ScriptedReply",
    "ScriptedToolCall",
    "directives",
    "echo_reply",
    "image_urls",
    "lorem_reply",
    "lorem_responder",
    "message_text",
    "reasoning_responder",
    "split_tokens",
    "tool_reply",
]
