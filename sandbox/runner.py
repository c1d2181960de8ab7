"""`chat-bridge sandbox`: starts a session, plays the script, converses if asked, reports.

Exit codes: 0 when every reply completed (or a conversation ended with Ctrl-C or Ctrl-D), 1 with
one clear line when something failed, 130 when Ctrl-C cut the script short.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import TextIO

from bridge.config import StreamingSettings
from sandbox.display import make_display
from sandbox.interactive import Lines, converse, stdin_lines
from sandbox.log_capture import captured_logs
from sandbox.script import ScriptFailed
from sandbox.session import Interrupted, Sandbox, SandboxError, SandboxOptions
from sandbox.tracker import ReplyTimeout

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130

__all__ = ["SandboxOptions", "main", "perform", "run"]


async def run(
    options: SandboxOptions, out: TextIO, *, lines: Lines | None = None, live: bool | None = None
) -> int:
    """The whole command, showing on `out` (redrawn in place if `live`, default: a terminal)."""
    display = make_display(out, placeholder=StreamingSettings().placeholder, live=live)
    return await perform(Sandbox(options, display), lines=lines)


async def perform(sandbox: Sandbox, *, lines: Lines | None = None) -> int:
    """Start, play, maybe converse, report, stop; returns the exit code."""
    display = sandbox.display
    loop = asyncio.get_running_loop()
    handles_sigint = _catch_sigint(loop, sandbox.interrupt)
    try:
        with captured_logs(display.note) as logs:
            try:
                code = await _show(sandbox, lines)
            except (SandboxError, ScriptFailed, ReplyTimeout) as exc:
                code = EXIT_FAILED
                display.close()
                _explain(exc, logs.problems)
            finally:
                await sandbox.stop()
    finally:
        if handles_sigint:
            loop.remove_signal_handler(signal.SIGINT)
    if code == EXIT_INTERRUPTED:
        print("interrupted", file=sys.stderr)
    return code


async def _show(sandbox: Sandbox, lines: Lines | None) -> int:
    conversing = False
    try:
        await sandbox.guard(sandbox.start())
        await sandbox.guard(sandbox.play())
        if sandbox.options.interactive:
            conversing = True
            await sandbox.guard(converse(sandbox, lines or stdin_lines()))
            await sandbox.guard(sandbox.tracker.wait_all(sandbox.options.timeout))
    except Interrupted:
        # Ctrl-C is how a conversation ends; during the script it is an interruption.
        if not conversing:
            sandbox.display.close()
            return EXIT_INTERRUPTED
    sandbox.display.close()
    sandbox.display.write_lines(sandbox.report())
    return EXIT_OK


def _catch_sigint(loop: asyncio.AbstractEventLoop, interrupt: asyncio.Event) -> bool:
    try:
        loop.add_signal_handler(signal.SIGINT, interrupt.set)
    except (NotImplementedError, RuntimeError, ValueError):
        return False  # not the main thread, or no signals here (Windows): Ctrl-C still ends it
    return True


def _explain(exc: Exception, problems: Sequence[str]) -> None:
    print(f"error: {exc}", file=sys.stderr)
    if problems:
        print("the bridge's last warnings and errors:", file=sys.stderr)
        for line in list(problems)[-10:]:
            print(f"  {line}", file=sys.stderr)


def main(options: SandboxOptions) -> int:
    try:
        return asyncio.run(run(options, sys.stdout))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
