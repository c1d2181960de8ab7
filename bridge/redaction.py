"""The config's secrets, cut out of text: every log line (`bridge.logs`), whatever a tool sends
or returns (`bridge.tools`), a tool server's stderr, and every page of the console.

A tool result is untrusted text from outside (a web page, a file, a server that echoes its
environment): a token of the bridge's own config must never reach the model, the chat, the
store or a log through it. Tool arguments are cleaned the same way before a tool sees them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"
# Shorter values ("1", "true", a port) are settings, not secrets, and would cut words apart.
MIN_SECRET_CHARS = 6


class Redactor:
    """Replaces each secret with `REDACTED` (the longest first, so that a secret holding another
    is cut whole); `min_chars`: shorter values are left alone."""

    def __init__(
        self, secrets: Iterable[str], *, min_chars: int = MIN_SECRET_CHARS, mark: str = REDACTED
    ) -> None:
        kept = sorted({s for s in secrets if len(s) >= max(min_chars, 1)}, key=len, reverse=True)
        self._kept = tuple(kept)
        self._pattern = re.compile("|".join(map(re.escape, kept))) if kept else None
        self._mark = mark

    def redact(self, text: str) -> str:
        # Text with no secret in it (nearly all) is told by `in`, a fast search per secret,
        # where the pattern tries its alternatives at every letter that starts one of them: a
        # 2,500-character reply in 2 µs instead of 15 (the live page redacts every version).
        if self._pattern is None or not any(secret in text for secret in self._kept):
            return text
        return self._pattern.sub(self._mark, text)

    def redact_json(self, value: Any) -> Any:
        """Every string in a JSON value (keys too) redacted."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, list):
            return [self.redact_json(item) for item in value]
        if isinstance(value, dict):
            return {self.redact(str(k)): self.redact_json(v) for k, v in value.items()}
        return value
