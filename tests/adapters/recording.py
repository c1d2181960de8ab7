"""The core's intake and admin commands, remembering what an adapter hands them: adapter tests
assert the Origin and command calls while the real policy still decides."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.admin import AdminCommands
from bridge.domain import InboundMessage
from bridge.intake import Handoff, Intake, Prepare, SurfaceFactory
from bridge.policy.origin import Origin
from bridge.telemetry import ReplyReport


class RecordingIntake(Intake):
    def __init__(self, **parts: Any) -> None:
        super().__init__(**parts)
        self.received: list[tuple[InboundMessage, Origin]] = []

    async def receive(
        self,
        inbound: InboundMessage,
        origin: Origin,
        surfaces: SurfaceFactory,
        *,
        prepare: Prepare | None = None,
        handoff: Handoff | None = None,
    ) -> ReplyReport | None:
        self.received.append((inbound, origin))
        return await super().receive(inbound, origin, surfaces, prepare=prepare, handoff=handoff)

    def origins(self, text: str) -> list[Origin]:
        return [origin for inbound, origin in self.received if inbound.text == text]

    def origin_of(self, message_id: int | str) -> Origin:
        return next(o for m, o in self.received if m.platform_message_id == str(message_id))


class RecordingCommands(AdminCommands):
    def __init__(self, **parts: Any) -> None:
        super().__init__(**parts)
        self.runs: list[tuple[Origin, str, str]] = []
        self.answers: list[str] = []
        self.delay = 0.0  # seconds each command takes first (a slow database)

    @property
    def calls(self) -> list[tuple[Origin, str, str, str]]:
        """(origin, name, argument, answer) of each command that finished."""
        return [(*run, answer) for run, answer in zip(self.runs, self.answers, strict=False)]

    async def run(self, origin: Origin, name: str, argument: str = "") -> str:
        self.runs.append((origin, name, argument))
        if self.delay:
            await asyncio.sleep(self.delay)
        answer = await super().run(origin, name, argument)
        self.answers.append(answer)
        return answer
