"""A local OpenAI-compatible LLM server that streams scripted replies and injects faults.

Used by the integration tests, the offline sandbox and the streaming benchmarks.
"""

from .script import (
    Fault,
    FaultKind,
    Responder,
    ScriptedReply,
    echo_reply,
    lorem_reply,
    lorem_responder,
    split_tokens,
)
from .server import LLMServer
from .stream import LLMServerStats

__all__ = [
    "Fault",
    "FaultKind",
    "LLMServer",
    "LLMServerStats",
    "Responder",
    "ScriptedReply",
    "echo_reply",
    "lorem_reply",
    "lorem_responder",
    "split_tokens",
]
