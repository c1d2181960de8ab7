"""The policy's sections of the configuration file: [access], [limits] and [[overrides]].

Typed like every other section (`bridge.config`); `bridge.policy.rules` turns them into the
indexes a message is checked against.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from bridge.tools.settings import ToolName

# Ids are strings (Slack U.../C.../T..., Discord snowflakes): a bare number in TOML is an error,
# not silently converted, because a snowflake above 2**53 loses digits in many tools.
Id = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=100)]
Trigger = Literal["mention", "always", "off"]
NativeStreaming = Literal["auto", "always", "never"]

SCOPE_KEYS = ("workspace", "channel", "thread")
# Keys an override may set, in the order "effective settings" shows them.
OVERRIDABLE = (
    "trigger",
    "model",
    "system_prompt",
    "temperature",
    "max_output_tokens",
    "max_context_tokens",
    "n",
    "titles",
    "edit_interval",
    "native_streaming",
    "tools",
)
# Keys an admin may set per channel at run time (`/bridge model ...`), kept in the database.
RUNTIME_KEYS = ("model", "system_prompt", "trigger")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AccessSettings(_Section):
    """Who may talk to the bot, and where. Deny wins over allow; an empty allow-list allows all."""

    admins: list[Id] = Field(default_factory=list)
    allowed_users: list[Id] = Field(default_factory=list)
    denied_users: list[Id] = Field(default_factory=list)
    # On Discord a category id covers its channels, and a channel id its threads.
    allowed_channels: list[Id] = Field(default_factory=list)
    denied_channels: list[Id] = Field(default_factory=list)
    # Discord role ids: when allowed_roles is not empty, a guild member needs one of them.
    allowed_roles: list[Id] = Field(default_factory=list)
    denied_roles: list[Id] = Field(default_factory=list)
    # Slack team ids and Discord guild ids; empty: every workspace the bot is in.
    allowed_workspaces: list[Id] = Field(default_factory=list)
    allow_dms: bool = True
    # True: a short notice to the user (at most one a minute per user) instead of silence.
    notify_denied: bool = False
    # Who may start a fresh conversation with /reset: "everyone" or "admins".
    reset: Literal["everyone", "admins"] = "everyone"


class LimitSettings(_Section):
    """Rates, concurrency and daily token quotas; 0 means unlimited."""

    user_messages_per_minute: int = Field(default=0, ge=0)
    user_concurrent_replies: int = Field(default=0, ge=0)
    channel_concurrent_replies: int = Field(default=0, ge=0)
    max_input_chars: int = Field(default=0, ge=0)
    # Counted from the LLM's reported usage, kept in the database; the day is UTC.
    user_daily_tokens: int = Field(default=0, ge=0)
    channel_daily_tokens: int = Field(default=0, ge=0)
    # Process-wide cap on open LLM requests; the rest wait in order of arrival.
    llm_concurrent_requests: int = Field(default=0, ge=0)
    # Messages waiting for a reply, process-wide; beyond it the `notices.busy` notice.
    queue_limit: int = Field(default=0, ge=0)
    # A reply waiting this long for an LLM slot shows `notices.queued` in its placeholder.
    show_queued_after: float = Field(default=3.0, ge=0)
    # Files on users' messages: one larger than this is named to the model, never downloaded.
    max_attachment_bytes: int = Field(default=25_000_000, ge=0)
    # Images per message sent to the model; the rest are named, never downloaded.
    max_images_per_message: int = Field(default=4, ge=0, le=20)
    # A text file (plain text, Markdown, code, CSV, JSON, logs) is inlined up to this many bytes,
    # then cut with a visible note.
    max_text_attachment_bytes: int = Field(default=100_000, ge=1_000)


class OverrideSettings(_Section):
    """Settings for one workspace, channel (or Discord category) or thread."""

    workspace: Id | None = None
    channel: Id | None = None
    # Discord: the thread's id. Slack: "<channel>/<thread_ts>", e.g. "C0123/1712345678.000100".
    thread: Id | None = None
    trigger: Trigger | None = None
    system_prompt: str | None = None
    model: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_output_tokens: int | None = Field(default=None, ge=1)
    max_context_tokens: int | None = Field(default=None, ge=256)
    n: int | None = Field(default=None, ge=1, le=20)
    titles: bool | None = None
    edit_interval: float | None = Field(default=None, gt=0)
    native_streaming: NativeStreaming | None = None
    # The tools offered here ("server.tool", "server.*", "*"; [] none), instead of
    # mcp.default_tools.
    tools: list[ToolName] | None = None

    @model_validator(mode="after")
    def _one_scope(self) -> OverrideSettings:
        given = [key for key in SCOPE_KEYS if getattr(self, key) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(
                f"{given[1] if len(given) > 1 else 'channel'}: an override needs exactly one of "
                f"workspace, channel or thread (found: {found})"
            )
        return self

    @property
    def scope(self) -> tuple[str, str]:
        """(kind, id): which of workspace, channel or thread it names."""
        for key in SCOPE_KEYS:
            value = getattr(self, key)
            if value is not None:
                return key, value
        raise AssertionError("validated: exactly one scope key")

    def values(self) -> dict[str, object]:
        """The settings it sets (not its scope)."""
        values = {key: getattr(self, key) for key in OVERRIDABLE if getattr(self, key) is not None}
        if "tools" in values:
            values["tools"] = tuple(values["tools"])
        return values


def duplicate_scopes(overrides: list[OverrideSettings]) -> list[str]:
    """Problems (`overrides.N.key: ...`) for two overrides of the same scope."""
    seen: dict[tuple[str, str], int] = {}
    problems = []
    for index, override in enumerate(overrides):
        kind, value = override.scope
        # A channel and a thread id share one namespace on Discord (a thread is a channel).
        space = "workspace" if kind == "workspace" else "place"
        first = seen.setdefault((space, value), index)
        if first != index:
            problems.append(
                f"overrides.{index}.{kind}: {value!r} already has an override (overrides.{first})"
            )
    return problems
