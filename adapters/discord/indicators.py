"""Discord's typing indicator for replies in progress: one renewal loop per channel.

A typing indicator lasts 10 seconds, so it is renewed every 8. Replies that run at the same time
in one channel share the loop: one indicator shows either way, and N loops would spend the
channel's typing bucket N times over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

RENEW_EVERY = 8.0

SendTyping = Callable[[], Awaitable[object]]
Sleep = Callable[[float], Awaitable[None]]


@dataclass
class _Loop:
    task: asyncio.Task[None]
    users: int = 1


class TypingIndicators:
    def __init__(self, *, renew_every: float = RENEW_EVERY, sleep: Sleep = asyncio.sleep) -> None:
        self.renew_every = renew_every
        self._sleep = sleep
        self._loops: dict[int, _Loop] = {}

    def start(self, channel_id: int, send: SendTyping) -> None:
        """Show typing in the channel until every `start` there has had its `stop`.

        Returns at once: the request runs in the loop's task, so a typing bucket that discord.py
        waits on never delays the reply itself.
        """
        loop = self._loops.get(channel_id)
        if loop is not None and not loop.task.done():
            loop.users += 1
            return
        task = asyncio.get_running_loop().create_task(self._renew(channel_id, send))
        self._loops[channel_id] = _Loop(task)

    def stop(self, channel_id: int) -> None:
        loop = self._loops.get(channel_id)
        if loop is None:
            return
        loop.users -= 1
        if loop.users <= 0:
            del self._loops[channel_id]
            loop.task.cancel()

    def active(self, channel_id: int) -> bool:
        return channel_id in self._loops

    async def close(self) -> None:
        loops, self._loops = list(self._loops.values()), {}
        for loop in loops:
            loop.task.cancel()
        for loop in loops:
            with contextlib.suppress(asyncio.CancelledError):
                await loop.task

    async def _renew(self, channel_id: int, send: SendTyping) -> None:
        while True:
            try:
                await send()
            except Exception as exc:  # cosmetic: a failed indicator must not end anything
                log.info("typing indicator in channel %s failed: %s", channel_id, exc)
            await self._sleep(self.renew_every)
