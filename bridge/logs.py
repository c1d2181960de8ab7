"""Logging setup: plain text or one JSON object per line, with secrets redacted from every line."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from typing import Any

from bridge.redaction import REDACTED, Redactor

# Token shapes of the platforms and of OpenAI-style keys, in case one lands in an error message.
_TOKEN_PATTERNS = re.compile(
    r"(xox[abposr]-[A-Za-z0-9-]{8,}|xapp-[A-Za-z0-9-]{8,}|sk-[A-Za-z0-9_-]{12,}"
    r"|[MN][A-Za-z\d]{23,}\.[\w-]{6}\.[\w-]{27,})"
)


# Context a log line may carry through `extra=`; the JSON format gives each its own field.
CONTEXT_FIELDS = ("platform", "chat_id", "message_id", "reply_id", "event_id")


class RedactingFilter(logging.Filter):
    """Replaces configured secrets and token-shaped strings in the message and the traceback."""

    # Formats tracebacks before they are redacted; the stock formatter's layout.
    _tracebacks = logging.Formatter()

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = Redactor(secrets)

    def redact(self, text: str) -> str:
        return _TOKEN_PATTERNS.sub(REDACTED, self._secrets.redact(text))

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        # Formatters reuse a record's cached `exc_text` rather than format `exc_info` again, so
        # filling the cache with redacted text keeps a token in an exception out of every format.
        if record.exc_info and not record.exc_text:
            record.exc_text = self._tracebacks.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the context fields a line was logged with."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, json_format: bool, secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter(secrets))
    if json_format:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The SDKs log every HTTP request at INFO; keep them to warnings unless debugging.
    for noisy in ("slack_bolt", "slack_sdk", "discord", "httpx2", "openai", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.WARNING))
