"""Shows in the terminal what each platform displays while the sandbox runs.

On a terminal the replies in progress are redrawn in place below the finished ones; otherwise
(a pipe, a log, a test) each visible change is one line, the text's growth at most every
`min_gap` seconds.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from sandbox.exchange import Exchange

TAIL_CHARS = 64


def tail(text: str, size: int = TAIL_CHARS) -> str:
    """The end of a text on one line (line breaks shown as ⏎)."""
    flat = text.replace("\n", " ⏎ ")
    return flat if len(flat) <= size else "…" + flat[-(size - 1) :]


def outcome(exchange: Exchange) -> str:
    """The line that ends a reply: how it went and how long it took."""
    if exchange.status == "stopped":
        shown = _seconds(exchange.since_sent(exchange.done_at))
        return f"⏹ reply stopped by the user after {shown}, its text so far kept"
    if exchange.status != "complete":
        return f"✗ reply {exchange.status}: {exchange.error or 'no reason given'}"
    parts = [f"✓ reply done in {_seconds(exchange.since_sent(exchange.done_at))}"]
    parts.append(f"first text after {_seconds(exchange.since_sent(exchange.first_text_at))}")
    parts.append(f"{exchange.updates} visible updates")
    count = len(exchange.final_texts)
    parts.append(f"{count} message{'s' if count != 1 else ''}")
    if exchange.usage is not None:
        parts.append(f"{exchange.usage.completion_tokens} tokens")
    return " · ".join(parts)


def final_text_lines(exchange: Exchange) -> list[str]:
    lines: list[str] = []
    for number, text in enumerate(exchange.final_texts, start=1):
        if len(exchange.final_texts) > 1:
            lines.append(f"  ┄┄ message {number} of {len(exchange.final_texts)} ┄┄")
        lines.extend(f"  │ {line}" for line in text.splitlines() or [""])
    return lines


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"


@dataclass(slots=True)
class _Printed:
    """What LogDisplay last printed of one reply."""

    label: str
    indicator: str = ""
    texts: tuple[str, ...] = ()
    at: float = float("-inf")
    flush: asyncio.TimerHandle | None = None


class LogDisplay:
    """A line per visible change, for output that is not a terminal."""

    def __init__(
        self,
        out: TextIO,
        *,
        placeholder: str,
        min_gap: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._out = out
        self._placeholder = placeholder
        self._min_gap = min_gap
        self._clock = clock
        self._started = clock()
        self._printed: dict[Exchange, _Printed] = {}

    def sent(self, exchange: Exchange, label: str) -> None:
        self._printed[exchange] = _Printed(label)
        self._line(exchange, label, f"alice: {exchange.prompt}")

    def changed(self, exchange: Exchange, label: str) -> None:
        printed = self._printed.setdefault(exchange, _Printed(label))
        printed.label = label
        state = exchange.state
        # Slack re-sets the status after each post; it is news only when it reads differently.
        if state.indicator and state.indicator != printed.indicator:
            printed.indicator = state.indicator
            self._line(exchange, label, state.indicator)
        if len(state.texts) > len(printed.texts):
            shown = state.texts[-1] or self._placeholder
            self._print_text(exchange, f"message {len(state.texts)} posted: {tail(shown)}")
        elif state.texts != printed.texts:
            wait = printed.at + self._min_gap - self._clock()
            if wait <= 0:
                self._print_growth(exchange)
            elif printed.flush is None:
                loop = asyncio.get_running_loop()
                printed.flush = loop.call_later(wait, self._print_growth, exchange)

    def _print_growth(self, exchange: Exchange) -> None:
        printed = self._printed.get(exchange)
        if printed is None or exchange.state.texts == printed.texts:
            return
        text = exchange.state.texts[-1]
        self._print_text(exchange, f"{len(text):>5} chars: {tail(text)}")

    def _print_text(self, exchange: Exchange, what: str) -> None:
        printed = self._printed[exchange]
        if printed.flush is not None:
            printed.flush.cancel()
            printed.flush = None
        printed.texts, printed.at = exchange.state.texts, self._clock()
        self._line(exchange, printed.label, what)

    def finished(self, exchange: Exchange, label: str) -> None:
        printed = self._printed.pop(exchange, None)
        if printed is not None and printed.flush is not None:
            printed.flush.cancel()
        self._line(exchange, label, outcome(exchange))
        self.write_lines(final_text_lines(exchange))

    def note(self, text: str) -> None:
        self.write_lines([f"{self._clock() - self._started:7.2f}s  {text}"])

    def prompt(self) -> None:
        return None  # nobody types into a pipe

    def input_received(self) -> None:
        return None

    def write_lines(self, lines: list[str]) -> None:
        self._out.write("".join(f"{line}\n" for line in lines))
        self._out.flush()

    def close(self) -> None:
        for printed in self._printed.values():
            if printed.flush is not None:
                printed.flush.cancel()
                printed.flush = None
        self._out.flush()

    def _line(self, exchange: Exchange, label: str, what: str) -> None:
        elapsed = self._clock() - self._started
        self.write_lines([f"{elapsed:7.2f}s  {exchange.platform:<7} {label}  {what}"])


class LiveDisplay:
    """Finished lines scroll up; the replies in progress are redrawn in place beneath them."""

    def __init__(
        self,
        out: TextIO,
        *,
        placeholder: str,
        clock: Callable[[], float] = time.monotonic,
        frame: float = 0.05,
    ) -> None:
        self._out = out
        self._placeholder = placeholder
        self._clock = clock
        self._frame = frame
        self._live: dict[Exchange, str] = {}  # reply in progress -> where it shows
        self._drawn = 0  # lines of the live area currently on screen
        self._pending: asyncio.TimerHandle | None = None
        self._offer_prompt = False  # interactive mode: a person types between replies
        self._prompting = False  # the prompt is on screen, ending the last line

    def sent(self, exchange: Exchange, label: str) -> None:
        self._live[exchange] = label
        where = f"\x1b[1m{exchange.platform:<7} {label}\x1b[0m"
        self.write_lines([f"{where}  alice: {exchange.prompt}"])

    def changed(self, exchange: Exchange, label: str) -> None:
        if exchange in self._live:
            self._live[exchange] = label
        self._schedule()

    def finished(self, exchange: Exchange, label: str) -> None:
        self._live.pop(exchange, None)
        colour = "32" if exchange.status == "complete" else "31"
        head = f"\x1b[1m{exchange.platform:<7} {label}\x1b[0m  {exchange.platform} shows:"
        body = final_text_lines(exchange)
        self.write_lines([head, *body, f"  \x1b[{colour}m{outcome(exchange)}\x1b[0m"])

    def note(self, text: str) -> None:
        self.write_lines([f"\x1b[2m{text}\x1b[0m"])

    def prompt(self) -> None:
        """From now on, show a prompt whenever no reply is in progress."""
        self._offer_prompt = True
        self._show_prompt()

    def input_received(self) -> None:
        self._prompting = False  # the terminal echoed the line and its newline

    def _show_prompt(self) -> None:
        if self._offer_prompt and not self._live and not self._prompting:
            self._out.write("you › ")
            self._out.flush()
            self._prompting = True

    def write_lines(self, lines: list[str]) -> None:
        self._erase()
        self._out.write("".join(f"{line}\n" for line in lines))
        self._draw()

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        self._offer_prompt = False
        self._erase()
        self._out.flush()

    # --- the live area ------------------------------------------------------------------------

    def _schedule(self) -> None:
        if self._pending is None:
            loop = asyncio.get_running_loop()
            self._pending = loop.call_later(self._frame, self._redraw)

    def _redraw(self) -> None:
        self._pending = None
        self._erase()
        self._draw()

    def _erase(self) -> None:
        if self._prompting:
            self._out.write("\r\x1b[K")
            self._prompting = False
        if self._drawn:
            # To the first line of the live area, then clear everything below it.
            self._out.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _draw(self) -> None:
        lines = self._live_lines()
        self._out.write("".join(f"{line}\n" for line in lines))
        self._out.flush()
        self._drawn = len(lines)
        if self._live:
            self._schedule()  # elapsed times and indicators change with time alone
        else:
            self._show_prompt()

    def _live_lines(self) -> list[str]:
        if not self._live:
            return []
        size = shutil.get_terminal_size()
        width = max(size.columns - 1, 20)
        per_reply = max(2, min(10, (size.lines - 4) // len(self._live) - 1))
        lines: list[str] = []
        now = self._clock()
        for exchange, label in self._live.items():
            state = exchange.state
            head = _fit(f"▸ {exchange.platform:<7} {label}  {now - exchange.sent_at:5.1f} s", width)
            room = width - len(head) - 2
            if state.indicator and room > 4:
                head += f"  \x1b[3m{_fit(state.indicator, room)}\x1b[0m"
            lines.append(head)
            if state.texts:
                text = state.texts[-1] or self._placeholder
                prefix = f"  │ [{len(state.texts)}] " if len(state.texts) > 1 else "  │ "
                body = text.splitlines()[-per_reply:] or [""]
                lines.extend(_fit(prefix + line, width) for line in body)
        return lines


def _fit(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


Display = LogDisplay | LiveDisplay


def make_display(out: TextIO, *, placeholder: str, live: bool | None = None) -> Display:
    """Redraw in place on a terminal, one line per change elsewhere."""
    if live is None:
        live = out.isatty()
    if live:
        return LiveDisplay(out, placeholder=placeholder)
    return LogDisplay(out, placeholder=placeholder)
