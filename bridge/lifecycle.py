"""Explicit lifecycle of the long-lived parts: start in order, stop in reverse, on signal or fault.

A `Service` that dies on its own (a gateway that closes for good) reports it through `fail`, which
stops the whole process with a non-zero exit instead of leaving a half-running bridge. A platform
that lost its access for good (app uninstalled, token revoked or rejected) fails with
`AccessRevoked`: the exit code is then EXIT_ACCESS_REVOKED (78, sysexits' EX_CONFIG), which a
restart policy can tell from a crash (systemd: RestartPreventExitStatus=78).

Stopping has two phases. First every service that takes work from outside stops taking it
(`stop_intake`, in reverse start order); then every service stops in reverse start order, so the
responder drains its replies while the platforms can still show them.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from typing import Literal, Protocol

log = logging.getLogger(__name__)

EXIT_FAILED = 1
EXIT_ACCESS_REVOKED = 78
DEFAULT_STOP_TIMEOUT = 15.0


class AccessRevoked(RuntimeError):
    """A platform will not let the bridge in until an admin acts (reinstall, new token)."""


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
            for service in services:
                running = getattr(service, "running", None)
                if running is not None:
                    await running()
            await self._stop.wait()
        except Exception as exc:
            self.fail(exc)
        finally:
            self._phase = "stopping"
            for service in reversed(started):
                stop_intake = getattr(service, "stop_intake", None)
                if stop_intake is None:
                    continue
                try:
                    await asyncio.wait_for(stop_intake(), timeout=DEFAULT_STOP_TIMEOUT)
                except Exception:
                    log.exception("stopping the intake of %s failed", service.name)
            for service in reversed(started):
                timeout = getattr(service, "stop_timeout", DEFAULT_STOP_TIMEOUT)
                try:
                    await asyncio.wait_for(service.stop(), timeout=timeout)
                    log.info("stopped %s", service.name)
                except Exception:
                    log.exception("stopping %s failed", service.name)
            if handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
            self._phase = "stopped"
        if isinstance(self.failure, AccessRevoked):
            log.error("chat-bridge stopped: %s (exit code %d: fix the access, then start it again)",
                      self.failure, EXIT_ACCESS_REVOKED)  # fmt: skip
            return EXIT_ACCESS_REVOKED
        if self.failure is not None:
            log.error("chat-bridge stopped: %s", self.failure)
            return EXIT_FAILED
        return 0
