"""Admin commands in chat, platform-free: each adapter turns its slash command into `run`.

Slack: `/chat-bridge <command> [argument]`, answered ephemerally. Discord: `/reset`, and `/bridge
<command> [argument]` with an admin-only default permission. Only `access.admins` may run the
admin commands; `reset` is for everyone unless `access.reset = "admins"`.

What the commands change (a place's model, prompt and trigger, a fresh conversation) is done by
`AdminActions`, which the console's Settings page calls too: one check of each value, one store
call, one update of the policy's cache, whichever way an admin makes the change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bridge.policy.effective import EffectiveSettings
from bridge.policy.origin import Origin
from bridge.policy.policy import Policy
from bridge.ports import ChatStore, RuntimeOverride
from bridge.text import clean_text

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    description: str  # at most 100 characters (Discord's limit)
    argument: str | None = None  # the argument's name, when it takes one
    choices: tuple[str, ...] = ()
    admin_only: bool = True


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        "reset",
        "Start a fresh conversation here: the bot forgets the earlier messages.",
        admin_only=False,
    ),
    CommandSpec("usage", "Today's tokens per user and per channel (UTC day)."),
    CommandSpec("settings", "The effective settings here, and which override supplied each."),
    CommandSpec("model", "Set the model used here.", argument="model"),
    CommandSpec("prompt", "Set the system prompt used here.", argument="prompt"),
    CommandSpec(
        "trigger",
        "When the bot answers here: mention, always or off.",
        argument="trigger",
        choices=("mention", "always", "off"),
    ),
    CommandSpec("reset-settings", "Remove the model, prompt and trigger set here in chat."),
    CommandSpec("help", "What these commands do.", admin_only=False),
)
BY_NAME = {spec.name: spec for spec in COMMANDS}

NOT_ADMIN = "Only the bridge's admins may use this command (their ids are in access.admins)."
RESET_DONE = "Started a fresh conversation: the bot no longer reads the earlier messages here."
MAX_PROMPT_CHARS = 4000
MAX_MODEL_CHARS = 100
# The command that sets each runtime key (`bridge.policy.settings.RUNTIME_KEYS`).
COMMAND_OF_KEY = {"model": "model", "system_prompt": "prompt", "trigger": "trigger"}


class Refused(ValueError):
    """A value an admin action does not take; its message is what the admin is told."""


class AdminActions:
    """What an admin changes about a place at run time, in chat or on the console: each action
    takes the `Origin` of the place (its `scope` is where runtime settings are kept)."""

    def __init__(self, *, policy: Policy, store: ChatStore) -> None:
        self._policy = policy
        self._store = store

    def effective(self, origin: Origin) -> EffectiveSettings:
        """The settings a message at `origin` is answered with now."""
        return self._policy.resolve(origin)

    async def runtime_overrides(self) -> list[RuntimeOverride]:
        """Every runtime override, as stored (another instance's included)."""
        return await self._store.runtime_overrides()

    async def overrides_at(self, origin: Origin) -> list[RuntimeOverride]:
        """The runtime overrides a message at `origin` is resolved with, most specific first."""
        stored = {(o.platform, o.scope): o for o in await self._store.runtime_overrides()}
        found = (stored.get((origin.platform, place)) for place in origin.places)
        return [override for override in found if override is not None]

    def check(self, key: str, value: str) -> str:
        """The value as it would be stored for `key`; `Refused` with the reason otherwise."""
        command = COMMAND_OF_KEY.get(key)
        if command is None:
            raise Refused(f"Only {', '.join(COMMAND_OF_KEY)} may be set at run time.")
        spec = BY_NAME[command]
        value = clean_text(value).strip()
        if not value:
            raise Refused(f"`{spec.name}` needs a {spec.argument}: {spec.description}")
        if key == "model" and (len(value) > MAX_MODEL_CHARS or any(c.isspace() for c in value)):
            raise Refused(f"A model name is one word of at most {MAX_MODEL_CHARS} characters.")
        if key == "system_prompt" and len(value) > MAX_PROMPT_CHARS:
            raise Refused(f"The system prompt may have at most {MAX_PROMPT_CHARS:,} characters.")
        if key == "trigger":
            value = value.lower()
            if value not in spec.choices:
                raise Refused(f"The trigger is one of: {', '.join(spec.choices)}.")
        return value

    async def set(self, origin: Origin, key: str, value: str) -> str:
        """Set `key` for the place of `origin` (by `origin.user`); the next message there is
        resolved with it. Returns the value stored."""
        value = self.check(key, value)
        await self._policy.set_runtime(origin, key, value)
        return value

    async def clear(self, origin: Origin) -> bool:
        """Remove the model, prompt and trigger set for the place; False when none was set."""
        return await self._policy.clear_runtime(origin)

    async def reset(self, origin: Origin) -> int:
        """A fresh conversation at the place (Slack: each thread of the channel; Discord: the
        channel's or the thread's conversation); returns how many conversations."""
        return await self._store.reset_place(origin.platform, origin.workspace, origin.scope)


class AdminCommands:
    """Runs a command for the person at `origin`; returns the text they see (ephemerally)."""

    def __init__(self, *, policy: Policy, store: ChatStore) -> None:
        self._policy = policy
        self._store = store
        self.actions = AdminActions(policy=policy, store=store)

    def is_admin(self, origin: Origin) -> bool:
        return self._policy.rules.is_admin(origin.user)

    async def run(self, origin: Origin, name: str, argument: str = "") -> str:
        spec = BY_NAME.get(name.strip().lower())
        if spec is None:
            return await self._help(origin, unknown=name.strip())
        rules = self._policy.rules
        admin = rules.is_admin(origin.user)
        if not admin and rules.denial(origin) is not None:
            return rules.notices.denied  # [access] applies to commands as to messages
        if (spec.admin_only or (spec.name == "reset" and rules.reset_admins_only)) and not admin:
            log.info("%s %s: /%s refused (not an admin)", origin.platform, origin.user, spec.name)
            return NOT_ADMIN
        argument = clean_text(argument).strip()
        if spec.argument is not None and not argument:
            return f"`{spec.name}` needs a {spec.argument}: {spec.description}"
        handler = getattr(self, "_" + spec.name.replace("-", "_"))
        answer: str = await handler(origin, argument)
        return answer

    async def _help(self, origin: Origin, argument: str = "", unknown: str = "") -> str:
        admin = self._policy.rules.is_admin(origin.user)
        lines = [f"Unknown command `{unknown[:40]}`." if unknown else "Commands:"]
        for spec in COMMANDS:
            if spec.admin_only and not admin:
                continue
            usage = f"{spec.name} <{spec.argument}>" if spec.argument else spec.name
            lines.append(f"• `{usage}`: {spec.description}")
        return "\n".join(lines)

    async def _reset(self, origin: Origin, argument: str) -> str:
        count = await self.actions.reset(origin)
        log.info("%s %s: /reset in %s (%d conversations)", origin.platform, origin.user,
                 origin.scope, count)  # fmt: skip
        return RESET_DONE

    async def _usage(self, origin: Origin, argument: str) -> str:
        report = await self._store.usage_report(self._policy.today(), origin.platform, limit=10)
        limits = self._policy.rules.limits
        lines = [f"Tokens today ({report.day.isoformat()}, UTC):"]
        for title, rows, quota in (
            ("Users", report.users, limits.user_daily_tokens),
            ("Channels", report.channels, limits.channel_daily_tokens),
        ):
            lines.append(f"{title}:" + ("" if rows else " none yet"))
            for row in rows:
                share = f" ({row.tokens * 100 // quota}% of {quota:,})" if quota else ""
                lines.append(f"• {row.key}: {row.tokens:,} tokens, {row.replies} replies{share}")
        return "\n".join(lines)

    async def _settings(self, origin: Origin, argument: str) -> str:
        effective = self.actions.effective(origin)
        lines = [f"Effective settings here ({origin.scope or 'this conversation'}):"]
        for key, value, source in effective.shown():
            lines.append(f"• {key} = {value!r} ({source})")
        return "\n".join(lines)

    async def _model(self, origin: Origin, argument: str) -> str:
        return await self._set(origin, "model", argument)

    async def _prompt(self, origin: Origin, argument: str) -> str:
        return await self._set(origin, "system_prompt", argument)

    async def _trigger(self, origin: Origin, argument: str) -> str:
        return await self._set(origin, "trigger", argument)

    async def _set(self, origin: Origin, key: str, value: str) -> str:
        try:
            value = await self.actions.set(origin, key, value)
        except Refused as refused:
            return str(refused)
        log.info("%s %s: set %s for %s", origin.platform, origin.user, key, origin.scope)
        shown = value if len(value) <= 80 else value[:79] + "…"
        return (
            f"{key} here is now {shown!r}. It is kept across restarts; `reset-settings` removes it."
        )

    async def _reset_settings(self, origin: Origin, argument: str) -> str:
        cleared = await self.actions.clear(origin)
        log.info("%s %s: reset-settings for %s", origin.platform, origin.user, origin.scope)
        if not cleared:
            return "Nothing was set here in chat; the settings come from the configuration file."
        return "The model, prompt and trigger set here in chat are removed."
