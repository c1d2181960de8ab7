"""Explicit lifecycle of the long-lived parts: start in order, stop in reverse, on signal or fault.

A `Service` that dies on its own (a gateway that closes for good) reports it through `fail`, which
stops the whole process with a non-zero exit instead of leaving a half-running bridge.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from typing import Literal, Protocol

log = logging.getLogger(__name__)


class Service(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


Phase = Literal["starting", "running", "stopping", "stopped"]


class Lifecycle:
    """Runs services until `request_stop` (SIGINT/SIGTERM) or `fail`."""

    def __init__(self) -> None:
        self._stop = asyncio.Event()
        self._phase: Phase = "starting"
        self.failure: BaseException | None = None
        self.started: list[str] = []  # names of the services started so far, in order

    @property
    def phase(self) -> Phase:
        """`running` only while every service has started and no stop was asked for."""
        if self._phase in ("starting", "running") and self._stop.is_set():
            return "stopping"
        return self._phase

    def request_stop(self) -> None:
        self._stop.set()

    def fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        self._stop.set()

    async def run(self, services: Sequence[Service], *, handle_signals: bool = True) -> int:
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.request_stop)
        started: list[Service] = []
        self._phase = "starting"
        self.started = []
        try:
            for service in services:
                log.info("starting %s", service.name)
                await service.start()
                started.append(service)
                self.started.append(service.name)
            self._phase = "running"
            log.info("running: %s", ", ".join(s.name for s in services))
            await self._stop.wait()
        except Exception as exc:
            self.fail(exc)
        finally:
            self._phase = "stopping"
            for service in reversed(started):
                try:
                    await asyncio.wait_for(service.stop(), timeout=15)
                    log.info("stopped %s", service.name)
                except Exception:
                    log.exception("stopping %s failed", service.name)
            if handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
            self._phase = "stopped"
        if self.failure is not None:
            log.error("chat-bridge stopped: %s", self.failure)
            return 1
        return 0
