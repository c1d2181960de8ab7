"""The policy of one configuration: who may talk to the bot, and the settings each place gets.

Built once per (re)load from `Settings` into sets and dicts, so checking a message and resolving
its settings are a few lookups whatever the number of ids and overrides (the benchmark in
`bench/policy.py` measures it with 1,000 ids and 200 overrides).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from bridge.policy.effective import EffectiveSettings, ReplySettings
from bridge.policy.origin import Origin
from bridge.policy.settings import LimitSettings

if TYPE_CHECKING:
    from bridge.config import NoticeSettings, Settings

# Resolved settings kept per place; a bot in more places than this resolves some again.
RESOLVED_CACHE = 4096

Layer = tuple[str, Mapping[str, Any]]  # (source label, values)


@dataclass(frozen=True, slots=True)
class Denial:
    """Why [access] does not let a message through (for the log; users see `notices.denied`)."""

    reason: str


class Rules:
    def __init__(self, settings: Settings) -> None:
        access = settings.access
        self.admins = frozenset(access.admins)
        self.allow_dms = access.allow_dms
        self.notify_denied = access.notify_denied
        self.reset_admins_only = access.reset == "admins"
        self._allowed_users = frozenset(access.allowed_users)
        self._denied_users = frozenset(access.denied_users)
        self._allowed_channels = frozenset(access.allowed_channels)
        self._denied_channels = frozenset(access.denied_channels)
        self._allowed_roles = frozenset(access.allowed_roles)
        self._denied_roles = frozenset(access.denied_roles)
        self._allowed_workspaces = frozenset(access.allowed_workspaces)
        self.limits: LimitSettings = settings.limits
        self.notices: NoticeSettings = settings.notices
        self.defaults = EffectiveSettings(
            trigger="mention",
            native_streaming=settings.slack.native_streaming,
            reply=ReplySettings(
                model=settings.llm.model,
                system_prompt=settings.llm.system_prompt,
                temperature=settings.llm.temperature,
                max_output_tokens=settings.llm.max_output_tokens,
                max_context_tokens=settings.llm.max_context_tokens,
                n=settings.llm.n,
                titles=settings.llm.titles,
                edit_interval=settings.streaming.edit_interval,
                tools=tuple(settings.mcp.default_tools) if settings.mcp.servers else (),
            ),
            sources={},
        )
        self._workspaces: dict[str, Layer] = {}
        self._places: dict[str, Layer] = {}
        for override in settings.overrides:
            kind, value = override.scope
            index = self._workspaces if kind == "workspace" else self._places
            index[value] = (f"override {kind} {value}", override.values())
        self._resolved: OrderedDict[tuple[object, ...], EffectiveSettings] = OrderedDict()

    # --- access ------------------------------------------------------------------------------

    def is_admin(self, user: str) -> bool:
        return user in self.admins

    def denial(self, origin: Origin) -> Denial | None:
        """None when [access] lets the message through. Deny wins over allow."""
        user = origin.user
        if user in self._denied_users:
            return Denial("the user is in access.denied_users")
        if self._allowed_users and user not in self._allowed_users:
            return Denial("the user is not in access.allowed_users")
        if origin.workspace and self._allowed_workspaces:
            if origin.workspace not in self._allowed_workspaces:
                return Denial("the workspace is not in access.allowed_workspaces")
        if origin.is_dm:
            return None if self.allow_dms else Denial("DMs are off (access.allow_dms)")
        places = origin.places
        if self._denied_channels and any(place in self._denied_channels for place in places):
            return Denial("the channel is in access.denied_channels")
        if self._allowed_channels and not any(place in self._allowed_channels for place in places):
            return Denial("the channel is not in access.allowed_channels")
        if self._denied_roles and not self._denied_roles.isdisjoint(origin.roles):
            return Denial("the user has a role in access.denied_roles")
        if self._allowed_roles and origin.platform == "discord" and origin.workspace:
            if self._allowed_roles.isdisjoint(origin.roles):
                return Denial("the user has no role in access.allowed_roles")
        return None

    # --- settings ----------------------------------------------------------------------------

    def resolve(
        self, origin: Origin, runtime: Mapping[str, Layer], runtime_version: int = 0
    ) -> EffectiveSettings:
        """The settings for a message at `origin`: defaults, then the workspace's override, then
        the category's, the channel's and the thread's, each place's runtime override (set by an
        admin in chat) over its override from the file. `runtime` maps a place id to its layer."""
        places = origin.places
        key = (origin.platform, origin.workspace, places, runtime_version)
        cached = self._resolved.get(key)
        if cached is not None:
            self._resolved.move_to_end(key)
            return cached
        layers: list[Layer] = []
        workspace = self._workspaces.get(origin.workspace) if origin.workspace else None
        if workspace is not None:
            layers.append(workspace)
        for place in reversed(places):  # least specific first: the most specific wins
            found = self._places.get(place)
            if found is not None:
                layers.append(found)
            set_at_run_time = runtime.get(place)
            if set_at_run_time is not None:
                layers.append(set_at_run_time)
        effective = self._apply(layers) if layers else self.defaults
        self._resolved[key] = effective
        if len(self._resolved) > RESOLVED_CACHE:
            self._resolved.popitem(last=False)
        return effective

    def _apply(self, layers: list[Layer]) -> EffectiveSettings:
        top: dict[str, Any] = {
            "trigger": self.defaults.trigger,
            "native_streaming": self.defaults.native_streaming,
        }
        reply: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for label, values in layers:
            for name, value in values.items():
                (top if name in top else reply)[name] = value
                sources[name] = label
        return EffectiveSettings(
            trigger=top["trigger"],
            native_streaming=top["native_streaming"],
            reply=replace(self.defaults.reply, **reply),
            sources=sources,
        )
