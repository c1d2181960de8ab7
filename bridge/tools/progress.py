"""A reply's tools as its user sees them while they run.

Where the platform shows tasks itself (Slack's native stream: task cards) the surface gets the
whole list and the writer sends it with its next write; elsewhere a status line below the text
(and in the platform's own status line) names the running tools and how long they have run,
refreshed every few seconds: each refresh is a write drawn from the reply's budget.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from bridge.ports import ToolActivity
from bridge.reasoning import STATUS_EVERY  # "🔧 Using `x`… 12 s" refreshes as "thinking… 12 s"
from bridge.tools.loop import status_line


class ToolProgress:
    def __init__(
        self,
        *,
        native: Callable[[Sequence[ToolActivity]], bool],
        refresh: Callable[[], None],
        status: Callable[[str], Awaitable[None]],
        clock: Callable[[], float],
        every: float = STATUS_EVERY,
    ) -> None:
        self._native = native
        self._refresh = refresh
        self._status = status
        self._clock = clock
        self._every = every
        self._activity: tuple[ToolActivity, ...] = ()
        self._since = 0.0
        self._ticker: asyncio.Task[None] | None = None
        self._shown = ""
        self._closed = False

    async def show(self, activity: Sequence[ToolActivity]) -> None:
        """The reply's tool calls changed (one started, ended or failed)."""
        if self._closed:
            return  # the reply is ending: a late call's end shows nothing more
        running = any(a.status == "in_progress" for a in activity)
        if running and not any(a.status == "in_progress" for a in self._activity):
            self._since = self._clock()
        self._activity = tuple(activity)
        if self._native(self._activity):
            self._refresh()
            return
        await self._show_line()
        if running and self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())
        elif not running:
            self._stop_ticker()

    def settle(self, activity: Sequence[ToolActivity]) -> None:
        """The round was cut short: the calls' last state goes with the reply's last write
        (task cards), and nothing shows any more after it."""
        self._activity = tuple(activity)
        self._native(self._activity)
        self.close()

    def close(self) -> None:
        """The reply ends: no more status from here on."""
        self._closed = True
        self._stop_ticker()

    def _stop_ticker(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    async def _show_line(self) -> None:
        line = status_line(self._activity, self._clock() - self._since)
        if line != self._shown:
            self._shown = line
            await self._status(line)

    async def _tick(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(self._every)
                await self._show_line()
