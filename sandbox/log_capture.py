"""Keeps the bridge's log lines off the sandbox's screen while it runs, and at hand if it fails.

The root logger writes into a bounded buffer; warnings and errors are also passed on, so the
display can show them in its own layout instead of having them break the redraw.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterator

# The SDKs log every HTTP request at INFO; the bridge's own INFO lines are worth keeping.
NOISY = ("slack_bolt", "slack_sdk", "discord", "httpx2", "openai", "apscheduler", "aiohttp")
KEPT_LINES = 400
# Warnings that say nothing about the sandbox: the bridge never joins Discord voice channels.
UNINTERESTING = (("discord.client", "voice will NOT be supported"),)


class CapturedLogs(logging.Handler):
    """Every line (`lines`), and the warnings and errors worth a person's attention (`problems`)."""

    def __init__(self, on_problem: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[str] = deque(maxlen=KEPT_LINES)
        self.problems: deque[str] = deque(maxlen=KEPT_LINES)
        self._on_problem = on_problem
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a broken log call must not end the sandbox
            return
        self.lines.append(line)
        if record.levelno >= logging.WARNING and not _uninteresting(record):
            self.problems.append(line)
            self._on_problem(line)


def _uninteresting(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return any(record.name == name and part in message for name, part in UNINTERESTING)


@contextlib.contextmanager
def captured_logs(on_problem: Callable[[str], None]) -> Iterator[CapturedLogs]:
    """Route every log record into a buffer (yielded) until the block ends, then restore."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_noisy = {name: logging.getLogger(name).level for name in NOISY}
    buffer = CapturedLogs(on_problem)
    root.handlers[:] = [buffer]
    root.setLevel(logging.INFO)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield buffer
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for name, level in saved_noisy.items():
            logging.getLogger(name).setLevel(level)
