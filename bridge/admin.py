"""Admin commands in chat, platform-free: each adapter turns its slash command into `run`.

Slack: `/chat-bridge <command> [argument]`, answered ephemerally. Discord: `/reset`, and `/bridge
<command> [argument]` with an admin-only default permission. Only `access.admins` may run the
admin commands; `reset` is for everyone unless `access.reset = "admins"`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bridge.policy.origin import Origin
from bridge.policy.policy import Policy
from bridge.ports import ChatStore
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


class AdminCommands:
    """Runs a command for the person at `origin`; returns the text they see (ephemerally)."""

    def __init__(self, *, policy: Policy, store: ChatStore) -> None:
        self._policy = policy
        self._store = store

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
        count = await self._store.reset_place(origin.platform, origin.workspace, origin.scope)
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
        effective = self._policy.resolve(origin)
        lines = [f"Effective settings here ({origin.scope or 'this conversation'}):"]
        for key, value, source in effective.shown():
            lines.append(f"• {key} = {value!r} ({source})")
        return "\n".join(lines)

    async def _model(self, origin: Origin, argument: str) -> str:
        if len(argument) > MAX_MODEL_CHARS or any(c.isspace() for c in argument):
            return f"A model name is one word of at most {MAX_MODEL_CHARS} characters."
        return await self._set(origin, "model", argument)

    async def _prompt(self, origin: Origin, argument: str) -> str:
        if len(argument) > MAX_PROMPT_CHARS:
            return f"The system prompt may have at most {MAX_PROMPT_CHARS:,} characters."
        return await self._set(origin, "system_prompt", argument)

    async def _trigger(self, origin: Origin, argument: str) -> str:
        choices = BY_NAME["trigger"].choices
        if argument.lower() not in choices:
            return f"The trigger is one of: {', '.join(choices)}."
        return await self._set(origin, "trigger", argument.lower())

    async def _set(self, origin: Origin, key: str, value: str) -> str:
        await self._policy.set_runtime(origin, key, value)
        log.info("%s %s: set %s for %s", origin.platform, origin.user, key, origin.scope)
        shown = value if len(value) <= 80 else value[:79] + "…"
        return (
            f"{key} here is now {shown!r}. It is kept across restarts; `reset-settings` removes it."
        )

    async def _reset_settings(self, origin: Origin, argument: str) -> str:
        cleared = await self._policy.clear_runtime(origin)
        log.info("%s %s: reset-settings for %s", origin.platform, origin.user, origin.scope)
        if not cleared:
            return "Nothing was set here in chat; the settings come from the configuration file."
        return "The model, prompt and trigger set here in chat are removed."
