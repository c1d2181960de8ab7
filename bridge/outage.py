"""Waiting out a short database outage instead of dropping what a user is waiting for."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from bridge.ports import StoreUnavailable
from bridge.scheduler import Clock, Sleep

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_PAUSE = 0.25
LONGEST_PAUSE = 2.0


async def through_outage(
    call: Callable[[], Awaitable[T]],
    *,
    tolerance: float,
    clock: Clock,
    sleep: Sleep,
    what: str,
    where: Mapping[str, object] | None = None,
) -> T:
    """`call()`, again after a pause while the store is unavailable, for up to `tolerance` seconds;
    then the last StoreUnavailable is raised. Other errors are raised at once."""
    started = clock()
    pause = FIRST_PAUSE
    first = True
    while True:
        try:
            return await call()
        except StoreUnavailable as exc:
            waited = clock() - started
            if waited + pause > tolerance:
                raise
            if first:
                first = False
                log.warning("database unavailable (%s); %s waits for it", exc, what, extra=where)
            await sleep(pause)
            pause = min(pause * 2, LONGEST_PAUSE)
