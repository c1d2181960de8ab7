"""The frozen settings one reply is answered with, resolved once when its message arrives.

`ReplySettings` is what the responder reads; `EffectiveSettings` adds what decides whether and
how the message is answered at all, and where each value came from ("effective settings").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from bridge.policy.settings import NativeStreaming, Trigger


@dataclass(frozen=True, slots=True)
class ReplySettings:
    """How one reply is generated and shown; travels with the reply (and its stored message)."""

    model: str
    system_prompt: str
    temperature: float
    max_output_tokens: int | None
    max_context_tokens: int
    n: int
    titles: bool
    edit_interval: float
    # The tools offered to the model ("server.tool", "server.*", "*"); () none.
    tools: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], default: ReplySettings) -> ReplySettings:
        """Read back what `to_dict` stored; a missing or malformed value takes `default`'s."""
        values: dict[str, Any] = {}
        for item in fields(cls):
            value = data.get(item.name)
            fallback = getattr(default, item.name)
            if isinstance(fallback, tuple):  # stored as a JSON list
                ok_list = isinstance(value, list) and all(isinstance(v, str) for v in value)
                values[item.name] = tuple(value or ()) if ok_list else fallback
                continue
            if isinstance(fallback, float) and type(value) is int:
                value = float(value)
            ok = type(value) is type(fallback) or (fallback is None and type(value) is int)
            values[item.name] = value if value is not None and ok else fallback
        return cls(**values)


@dataclass(frozen=True, slots=True)
class EffectiveSettings:
    trigger: Trigger
    native_streaming: NativeStreaming
    reply: ReplySettings
    # key -> where its value came from: "defaults", "workspace T0123", "channel C0123 (runtime)"...
    sources: Mapping[str, str]

    def shown(self) -> list[tuple[str, str, str]]:
        """(key, value, source) rows for the "effective settings" command and the console."""
        values: dict[str, Any] = {
            "trigger": self.trigger,
            "native_streaming": self.native_streaming,
            **self.reply.to_dict(),
        }
        return [
            (key, _short(value), self.sources.get(key, "defaults")) for key, value in values.items()
        ]


def _short(value: Any) -> str:
    text = (", ".join(value) or "none") if isinstance(value, tuple) else str(value)
    return text if len(text) <= 120 else text[:119] + "…"
