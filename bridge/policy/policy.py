"""The running policy: the current `Rules` (swapped whole on reload), the runtime overrides
admins set in chat (kept in the database, cached here), and the process's `Limiter`.

A lifecycle service: `start` loads the runtime overrides before any platform connects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from bridge.policy.effective import EffectiveSettings
from bridge.policy.limits import Clock, Limiter, NoticeGate
from bridge.policy.origin import Origin
from bridge.policy.rules import Layer, Rules
from bridge.ports import ChatStore, RuntimeOverride

if TYPE_CHECKING:
    from bridge.config import Settings

# `set_by` of an override an admin set on the console's settings page: "console:<session id>".
CONSOLE_SETTER = "console:"
log = logging.getLogger(__name__)


WallClock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Policy:
    def __init__(
        self, settings: Settings, store: ChatStore, clock: Clock, wall: WallClock = utc_now
    ) -> None:
        """`clock`: monotonic seconds (rates); `wall`: the UTC time (the quotas' day)."""
        self.name = "policy"
        self.wall = wall
        self._store = store
        self.settings = settings
        self.rules = Rules(settings)
        self.limiter = Limiter(clock)
        self.limiter.slots.capacity = settings.limits.llm_concurrent_requests
        self.notice_gate = NoticeGate(clock)
        self._runtime: dict[tuple[str, str], RuntimeOverride] = {}
        self._layers: dict[str, dict[str, Layer]] = {}
        self._version = 0

    async def start(self) -> None:
        self._cache(await self._store.runtime_overrides())

    async def stop(self) -> None:
        pass

    def replace(self, settings: Settings) -> None:
        """A reloaded configuration: the next message is checked and resolved with it; replies
        in flight keep the settings they started with (theirs are frozen)."""
        self.settings = settings
        self.rules = Rules(settings)
        self.limiter.slots.capacity = settings.limits.llm_concurrent_requests

    def today(self) -> date:
        """The quotas' day: UTC."""
        return self.wall().date()

    # --- resolving ---------------------------------------------------------------------------

    def resolve(self, origin: Origin) -> EffectiveSettings:
        layers = self._layers.get(origin.platform, _NONE)
        return self.rules.resolve(origin, layers, self._version)

    # --- runtime overrides -------------------------------------------------------------------

    async def refresh_runtime(self) -> None:
        """Read the runtime overrides again (another instance changed them)."""
        self._cache(await self._store.runtime_overrides())

    async def set_runtime(self, origin: Origin, key: str, value: str) -> None:
        scope = origin.scope
        await self._store.set_runtime_override(
            origin.platform, scope, key, value, set_by=origin.user
        )
        current = self._runtime.get((origin.platform, scope))
        values = {**(current.values if current else {}), key: value}
        self._put(RuntimeOverride(origin.platform, scope, values, origin.user, datetime.now(UTC)))

    async def clear_runtime(self, origin: Origin) -> bool:
        cleared = await self._store.clear_runtime_overrides(origin.platform, origin.scope)
        self._runtime.pop((origin.platform, origin.scope), None)
        self._rebuild()
        return cleared

    def _cache(self, overrides: list[RuntimeOverride]) -> None:
        self._runtime = {(o.platform, o.scope): o for o in overrides}
        self._rebuild()

    def _put(self, override: RuntimeOverride) -> None:
        self._runtime[(override.platform, override.scope)] = override
        self._rebuild()

    def _rebuild(self) -> None:
        layers: dict[str, dict[str, Layer]] = {}
        for (platform, scope), override in self._runtime.items():
            by = override.set_by
            if by.startswith(CONSOLE_SETTER):
                label = f"set in the console for {scope} (session {by[len(CONSOLE_SETTER) :]})"
            else:
                label = f"set in chat for {scope}" + (f" by {by}" if by else "")
            layers.setdefault(platform, {})[scope] = (label, dict(override.values))
        self._layers = layers
        self._version += 1


_NONE: Mapping[str, Layer] = {}
