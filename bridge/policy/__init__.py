"""Admin policy: who may talk to the bot and where, the settings of each place, and the limits.

`build_policy` assembles its parts for the composition root (and the tests); each message goes
through `bridge.intake.Intake`, and admin commands through `bridge.admin.AdminCommands`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.admin import AdminCommands
    from bridge.config import Settings
    from bridge.intake import Intake
    from bridge.policy.policy import Policy, WallClock
    from bridge.ports import ChatStore
    from bridge.responder import Responder


@dataclass(frozen=True, slots=True)
class PolicyParts:
    policy: Policy  # a lifecycle service: start it before the platforms
    intake: Intake
    commands: AdminCommands


def build_policy(
    settings: Settings,
    *,
    responder: Responder,
    store: ChatStore,
    wall: WallClock | None = None,
) -> PolicyParts:
    """`wall`: the UTC time the quotas' day is read from (tests move it past midnight)."""
    from bridge.admin import AdminCommands
    from bridge.intake import Intake
    from bridge.policy.policy import Policy

    policy = Policy(settings, store, responder.scheduler.now, *((wall,) if wall else ()))
    return PolicyParts(
        policy=policy,
        intake=Intake(policy=policy, responder=responder, store=store),
        commands=AdminCommands(policy=policy, store=store),
    )
