"""Typed configuration: one pydantic-settings model read once from a TOML file and the environment.

Only the composition root calls `load_settings`; every other part receives its section explicitly.
Environment variables `CHAT_BRIDGE_<SECTION>__<KEY>` override the file, so secrets need not
be in it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.sources.utils import parse_env_vars

from bridge.console_settings import ConsoleSettings, console_summary, console_warnings
from bridge.policy.settings import (
    AccessSettings,
    LimitSettings,
    OverrideSettings,
    duplicate_scopes,
)
from bridge.tools.settings import MCPSettings

ENV_PREFIX = "CHAT_BRIDGE_"
OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageSettings(_Section):
    url: str = "sqlite+aiosqlite:///./chat-bridge.db"
    # Processed inbound event ids are kept this long to recognise platform retries and replays.
    event_retention_hours: float = Field(default=72.0, gt=0)
    # Answered messages and chats idle this long are deleted; 0 keeps them for ever.
    retention_days: float = Field(default=0.0, ge=0)
    # A database outage this long is waited out (messages are stored and answered late); past
    # it a reply fails with a notice.
    outage_tolerance: float = Field(default=30.0, ge=0)
    # Where files of users' messages are kept (images, text files); empty: a `files` folder
    # next to the SQLite database, or `./chat-bridge-files` with PostgreSQL.
    files_dir: str = ""


class LLMSettings(_Section):
    base_url: str = OPENAI_DEFAULT_BASE_URL
    api_key: SecretStr | None = None
    model: str = "gpt-4o-mini"
    temperature: float = Field(default=0.7, ge=0, le=2)
    system_prompt: str = "You are a helpful assistant in a team chat. Answer concisely in Markdown."
    request_timeout: float = Field(default=60.0, gt=0)
    idle_timeout: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)
    n: int = Field(default=1, ge=1, le=20)
    max_context_tokens: int = Field(default=8000, ge=256)
    # A reply's cap; past it the reply ends with its text and the `notices.cut` notice.
    max_output_tokens: int = Field(default=4096, ge=1)
    # The most one reply may take from request to last token, whatever the model does.
    reply_timeout: float = Field(default=600.0, gt=0)
    titles: bool = True
    title_model: str | None = None
    # Images to the model as image parts: "auto" sends them and, if the endpoint refuses image
    # input, sends that model's turns without them from then on (logged once).
    vision: Literal["auto"] | bool = "auto"
    # Images of earlier turns are sent again only within this many user turns (they are costly).
    image_turns: int = Field(default=3, ge=0, le=50)
    # Images larger than this on their longer side are downscaled before they are sent or kept.
    image_max_side: int = Field(default=1568, ge=256, le=8192)
    # Rounds of tool calls ([mcp]) one reply may make; the last round offers no tools, so the
    # model answers with what it has.
    max_tool_rounds: int = Field(default=5, ge=0, le=50)


class StreamingSettings(_Section):
    edit_interval: float = Field(default=1.0, gt=0)
    placeholder: str = "…"
    # Shown at the end of a reply while it is still being written.
    cursor: str = " ▌"
    # The most platform messages one reply continues into; past it the reply is cut.
    max_messages_per_reply: int = Field(default=10, ge=1, le=100)
    # A reasoning model's thinking: "status" shows a live "thinking… 12 s" while it reasons;
    # "summary" also keeps a short summary above the answer; "off" shows nothing of it.
    show_reasoning: Literal["status", "off", "summary"] = "status"
    # A Stop button on a streaming reply (🛑 as a reaction works too) and 👍/👎 under a finished
    # one.
    stop_button: bool = True
    feedback_buttons: bool = True


class SlackSettings(_Section):
    enabled: bool = False
    mode: Literal["socket", "http"] = "socket"
    api_base_url: str = "https://slack.com/api/"
    bot_token: SecretStr | None = None
    app_token: SecretStr | None = None
    signing_secret: SecretStr | None = None
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=3000, ge=1, le=65535)
    native_streaming: Literal["auto", "always", "never"] = "auto"
    status_text: str = "is thinking…"
    loading_messages: list[str] = Field(default_factory=list, max_length=10)
    ignore_other_bots: bool = True
    suggested_prompts: list[str] = Field(default_factory=list, max_length=4)
    # Slack's AI-app surface: "assistant" (the assistant view: a pane with threads,
    # `assistant_thread_started`), "agent" (the newer agent view, opened from the app's Messages
    # tab) or "off" (mentions and DMs only). The manifest (`chat-bridge slack-manifest`) follows.
    app_view: Literal["assistant", "agent", "off"] = "assistant"
    # The admin slash command (`/chat-bridge <command> [argument]`): Slack takes a "/" and at
    # most 31 lowercase letters, digits, "-" or "_". Rename it to avoid a clash with another app.
    command: str = Field(default="/chat-bridge", pattern=r"^/[a-z0-9_-]{1,31}$")
    # chat.update is Tier 3 (about 50 per minute per workspace); stay a little under it.
    update_rate_per_minute: int = Field(default=45, ge=1)
    # assistant.threads.setStatus budget per workspace (Slack gives no tier; about 100 is seen).
    status_rate_per_minute: int = Field(default=90, ge=1)


class DiscordSettings(_Section):
    enabled: bool = False
    token: SecretStr | None = None
    api_base_url: str = "https://discord.com/api/v10"
    gateway_url: str = "wss://gateway.discord.gg/"
    auto_thread: bool = False
    ignore_other_bots: bool = True
    # Without the privileged message-content intent, answer mentions only instead of failing.
    mention_only_without_intent: bool = True
    command_guilds: list[int] = Field(default_factory=list)
    # Seconds to wait for the guilds' data after READY before answering (discord.py's default).
    guild_ready_timeout: float = Field(default=2.0, ge=0)
    # Sharding: the bot's gateway is split into shard_count shards (a guild is on shard
    # (guild_id >> 22) % shard_count, DMs on shard 0); this process connects shard_ids (empty:
    # all of them). Each process gets a share of the bot's global request limit in proportion.
    shard_count: int = Field(default=1, ge=1, le=10_000)
    shard_ids: list[int] = Field(default_factory=list)
    # On start, answer the mentions of the last N minutes that no instance answered while the bot
    # was down (read from channel history within the rate budget). 0: off.
    catch_up_minutes: float = Field(default=0.0, ge=0, le=24 * 60)

    @model_validator(mode="after")
    def _shards_in_range(self) -> DiscordSettings:
        wrong = [i for i in self.shard_ids if not 0 <= i < self.shard_count]
        if wrong:
            raise ValueError(
                f"shard_ids: {wrong} not within 0..{self.shard_count - 1} (shard_count)"
            )
        if len(set(self.shard_ids)) != len(self.shard_ids):
            raise ValueError("shard_ids: each shard id at most once")
        return self

    def shards(self) -> list[int]:
        """The shards this process connects."""
        return sorted(self.shard_ids) or list(range(self.shard_count))


class RecoverySettings(_Section):
    """What happens to messages when the bridge stops, crashes or loses its database."""

    # SIGTERM: seconds for replies in flight (and queued ones) to finish before they are ended
    # with a notice. Keep it under your supervisor's kill timeout (systemd 90 s, Kubernetes 30 s).
    drain_timeout: float = Field(default=20.0, ge=0)
    # After a crash, messages left unanswered at most this many seconds ago are answered; older
    # ones get the `notices.ask_again` notice instead.
    answer_within: float = Field(default=900.0, ge=0)
    # How often this process looks for stuck replies and dead processes' messages.
    sweep_interval: float = Field(default=30.0, gt=0)
    # How often this process says it is alive; another process whose last heartbeat is older
    # than owner_timeout is taken for dead and its messages recovered.
    heartbeat_interval: float = Field(default=10.0, gt=0)
    owner_timeout: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _timeout_exceeds_heartbeat(self) -> RecoverySettings:
        if self.owner_timeout < 2 * self.heartbeat_interval:
            raise ValueError("owner_timeout: must be at least twice heartbeat_interval")
        return self


class ClusterSettings(_Section):
    """Several instances on one PostgreSQL database: each Slack workspace and Discord shard is
    answered by the one instance that holds its lease; the others hand their events to it."""

    enabled: bool = False
    # This instance's name in leases and logs (empty: the host name and the pid).
    instance_id: str = Field(default="", max_length=64)
    # A lease lasts this long after its holder's last renewal (renewed every third of it).
    lease_seconds: float = Field(default=10.0, ge=1)
    # A live instance takes over a dead holder's leases (and finishes or answers its replies)
    # at most this long after the holder's last renewal. More than lease_seconds.
    takeover_seconds: float = Field(default=15.0, ge=2)

    @model_validator(mode="after")
    def _takeover_after_expiry(self) -> ClusterSettings:
        if self.takeover_seconds <= self.lease_seconds:
            raise ValueError("takeover_seconds: must be more than lease_seconds")
        return self


class NoticeSettings(_Section):
    """What users see in chat when a reply cannot end normally. Details go to the log only."""

    # {reason}: a short generic cause ("the model service returned an error"); {ref}: the id to
    # look for in the log.
    failed: str = "⚠️ _Reply interrupted: {reason} (ref {ref})._"
    # A reply cut short on purpose; {reason}: "it reached the length limit", "it took too long".
    cut: str = "✂️ _Reply cut: {reason}._"
    # Shown on a reply that was streaming when the bridge crashed or stopped.
    interrupted: str = "⚠️ _Reply interrupted: the bridge restarted while writing it. Ask again._"
    # Shown for a message the bridge could not answer before it stopped or in time after a crash.
    ask_again: str = "⚠️ _The bridge restarted before it could answer this. Please ask again._"
    # A message not answered because of [limits]; {limit}: which limit ("you sent 5 messages in
    # the last minute, the most allowed"), {resets}: when to try again ("Try again in 40 s.").
    limited: str = "⏳ _Not answered: {limit}. {resets}_"
    # Beyond limits.queue_limit.
    busy: str = "⏳ _Too many questions at once right now: please try again shortly._"
    # In the placeholder of a reply waiting for an LLM slot (limits.llm_concurrent_requests).
    queued: str = "⏳ _Queued: the model is busy, your answer starts shortly…_"
    # The same in Slack's status line (plain text after the app's name), for native streams.
    queued_status: str = "is waiting for the model…"
    # To a user [access] does not allow, when access.notify_denied is true.
    denied: str = "🚫 _You cannot use this bot here._"
    # Under a reply a user stopped (Stop button or 🛑); its text so far stands above it.
    stopped: str = "⏹️ _Stopped._"
    # To the author of a message with files the model cannot read (once per message); {files}:
    # "report.pdf (2.0 MB): not a file type I can read; …".
    unreadable: str = "📎 _I could not read {files}. The model was told they were attached._"

    @model_validator(mode="after")
    def _known_placeholders(self) -> NoticeSettings:
        allowed = {
            "failed": {"reason", "ref"},
            "cut": {"reason"},
            "limited": {"limit", "resets"},
            "unreadable": {"files"},
        }
        names = (
            "failed", "cut", "interrupted", "ask_again", "limited", "busy", "queued",
            "queued_status", "denied", "stopped", "unreadable",
        )  # fmt: skip
        for name in names:
            template = getattr(self, name)
            try:
                template.format(**{key: "" for key in allowed.get(name, ())})
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"{name}: unknown placeholder or brace {exc}; allowed: "
                    f"{', '.join('{' + k + '}' for k in sorted(allowed.get(name, ()))) or 'none'}"
                ) from None
        return self


class OpsSettings(_Section):
    """The operations endpoint: Prometheus metrics at /metrics and a health check at /healthz."""

    # Off unless asked for: two bridges (or test runs) on one host would contend for the port.
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=9102, ge=1, le=65535)


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_format: bool = False


class Settings(BaseSettings):
    """The whole configuration of one chat-bridge process."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    storage: StorageSettings = StorageSettings()
    llm: LLMSettings = LLMSettings()
    streaming: StreamingSettings = StreamingSettings()
    slack: SlackSettings = SlackSettings()
    discord: DiscordSettings = DiscordSettings()
    recovery: RecoverySettings = RecoverySettings()
    cluster: ClusterSettings = ClusterSettings()
    notices: NoticeSettings = NoticeSettings()
    ops: OpsSettings = OpsSettings()
    console: ConsoleSettings = ConsoleSettings()
    logging: LoggingSettings = LoggingSettings()
    access: AccessSettings = AccessSettings()
    limits: LimitSettings = LimitSettings()
    overrides: list[OverrideSettings] = Field(default_factory=list)
    mcp: MCPSettings = MCPSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit arguments, then the environment, then the TOML file.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @model_validator(mode="after")
    def _require_secrets_of_enabled_platforms(self) -> Settings:
        problems: list[str] = []
        if self.slack.enabled:
            if self.slack.bot_token is None:
                problems.append("slack.bot_token: required when slack.enabled is true")
            if self.slack.mode == "socket" and self.slack.app_token is None:
                problems.append('slack.app_token: required when slack.mode is "socket"')
            if self.slack.mode == "http" and self.slack.signing_secret is None:
                problems.append('slack.signing_secret: required when slack.mode is "http"')
        problems.extend(duplicate_scopes(self.overrides))
        for name in self.mcp.unknown_servers(self.mcp.default_tools):
            problems.append(f"mcp.default_tools: {name!r} names no server in [[mcp.servers]]")
        for index, override in enumerate(self.overrides):
            for name in self.mcp.unknown_servers(override.tools or ()):
                problems.append(
                    f"overrides.{index}.tools: {name!r} names no server in [[mcp.servers]]"
                )
        if self.discord.enabled and self.discord.token is None:
            problems.append("discord.token: required when discord.enabled is true")
        if self.cluster.enabled and not self.storage.url.startswith("postgresql"):
            scheme = self.storage.url.split(":", 1)[0]
            problems.append(
                "cluster.enabled: needs PostgreSQL, through which the instances coordinate "
                f"(storage.url is {scheme}); see docs/deploy.md"
            )
        openai_without_key = (
            self.llm.api_key is None and self.llm.base_url.rstrip("/") == OPENAI_DEFAULT_BASE_URL
        )
        if openai_without_key and self.enabled_platforms():
            problems.append("llm.api_key: required for OpenAI's API (or set OPENAI_API_KEY)")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def enabled_platforms(self) -> list[str]:
        return [name for name in ("slack", "discord") if getattr(self, name).enabled]


class ConfigError(Exception):
    """The configuration is invalid; `problems` holds one `key.path: message` line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_settings(
    path: Path | None,
    environ: Mapping[str, str] | None = None,
    *,
    values: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the TOML file (if any) and the environment into `Settings`, or raise ConfigError.

    `environ` defaults to os.environ; tests and the sandbox pass their own mapping instead.
    `values` (sections as dicts) take precedence over both.
    """
    env = dict(os.environ if environ is None else environ)
    problems = _unknown_env_keys(env)
    if path is not None and not path.is_file():
        raise ConfigError([f"--config: no such file: {path}"])

    def sources(
        cls: type[BaseSettings], /, settings_cls: type[BaseSettings], **_: object
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: the environment, then the TOML file, then OPENAI_API_KEY as a last resort.
        fallback = {"llm": {"api_key": env["OPENAI_API_KEY"]}} if "OPENAI_API_KEY" in env else {}
        return (
            InitSettingsSource(settings_cls, init_kwargs=dict(values or {})),
            _MappingEnvSource(settings_cls, env),
            TomlConfigSettingsSource(settings_cls),
            InitSettingsSource(settings_cls, init_kwargs=fallback),
        )

    loader = type(
        "Settings",
        (Settings,),
        {
            "model_config": {**Settings.model_config, "toml_file": path},
            "settings_customise_sources": classmethod(sources),
        },
    )
    try:
        settings: Settings = loader()
    except ValidationError as exc:
        problems.extend(_describe(exc))
    except ValueError as exc:  # TOML syntax errors surface as tomllib.TOMLDecodeError
        problems.append(f"{path}: {exc}")
    if problems:
        raise ConfigError(problems)
    return settings


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading a given mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


def _unknown_env_keys(env: Mapping[str, str]) -> list[str]:
    problems = []
    for name in env:
        if not name.startswith(ENV_PREFIX):
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        section_model = Settings.model_fields.get(section)
        if section_model is None:
            problems.append(f"env {name}: unknown section {section!r}")
            continue
        annotation = section_model.annotation
        fields = getattr(annotation, "model_fields", {})
        if key and key not in fields:
            problems.append(f"env {name}: unknown key {section}.{key}")
    return problems


def _describe(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"])
        if error["type"] == "value_error" and not loc:
            # Our cross-field validator already prefixes every line with its key path.
            lines.extend(message.removeprefix("Value error, ").splitlines())
        elif error["type"] == "value_error":
            # A section's validator names the key within its section ("key: problem").
            lines.append(f"{loc}.{message.removeprefix('Value error, ')}")
        else:
            lines.append(f"{loc}: {message}" if loc else message)
    return lines


def summary(settings: Settings) -> list[str]:
    """A short, secret-free description of what `run` would start."""
    platforms = settings.enabled_platforms()
    lines = [f"platforms: {', '.join(platforms) if platforms else 'none enabled'}"]
    if settings.slack.enabled:
        s = settings.slack
        where = f"http {s.http_host}:{s.http_port}/slack/events" if s.mode == "http" else "socket"
        lines.append(
            f"slack: mode {where}, api {s.api_base_url}, bot_token {_mask(s.bot_token)}, "
            f"native_streaming {s.native_streaming}"
        )
    if settings.discord.enabled:
        d = settings.discord
        lines.append(
            f"discord: api {d.api_base_url}, gateway {d.gateway_url}, token {_mask(d.token)}, "
            f"auto_thread {d.auto_thread}"
        )
    llm = settings.llm
    lines.append(
        f"llm: model {llm.model} at {llm.base_url}, api_key {_mask(llm.api_key)}, n {llm.n}"
    )
    lines.append(f"streaming: edit_interval {settings.streaming.edit_interval}s")
    if settings.ops.enabled:
        ops = settings.ops
        lines.append(f"ops: /metrics and /healthz at http://{ops.host}:{ops.port}")
    lines.extend(console_summary(settings.console))
    lines.append(f"storage: {_redact_url(settings.storage.url)}")
    if settings.cluster.enabled:
        c = settings.cluster
        lines.append(
            f"cluster: instance {c.instance_id or '(host:pid)'}, lease {c.lease_seconds:g}s, "
            f"takeover within {c.takeover_seconds:g}s"
        )
    if settings.discord.enabled and settings.discord.shard_count > 1:
        d = settings.discord
        lines.append(f"discord shards: {d.shards()} of {d.shard_count}")
    if settings.mcp.servers:
        servers = ", ".join(
            f"{server.name} ({'stdio' if server.command else 'http'})"
            for server in settings.mcp.servers
        )
        lines.append(
            f"mcp: {servers}; default_tools {', '.join(settings.mcp.default_tools) or 'none'}, "
            f"max_tool_rounds {settings.llm.max_tool_rounds}"
        )
    lines.extend(_policy_summary(settings))
    return lines


def warnings(settings: Settings) -> list[str]:
    """What `check` warns about without refusing it, one `key.path: message` line each."""
    return console_warnings(settings.console)


def _policy_summary(settings: Settings) -> list[str]:
    access, limits = settings.access, settings.limits
    lists = [
        f"{name} {len(getattr(access, name))}"
        for name in type(access).model_fields
        if name != "admins" and isinstance(getattr(access, name), list) and getattr(access, name)
    ]
    dms = "" if access.allow_dms else ", DMs off"
    lines = [f"access: {len(access.admins)} admins, {', '.join(lists) or 'open to everyone'}{dms}"]
    set_limits = [f"{k} {v}" for k, v in limits.model_dump().items()
                  if v and k != "show_queued_after"]  # fmt: skip
    lines.append(f"limits: {', '.join(set_limits) or 'none'}")
    if settings.overrides:
        kinds: dict[str, int] = {}
        for override in settings.overrides:
            kinds[override.scope[0]] = kinds.get(override.scope[0], 0) + 1
        counted = ", ".join(f"{kind} {count}" for kind, count in kinds.items())
        lines.append(f"overrides: {len(settings.overrides)} ({counted})")
    return lines


def secret_values(settings: BaseModel) -> list[str]:
    """Every secret of the config (tokens, keys, MCP servers' env and headers, the database
    password): what must never leave the bridge through a tool (`bridge.redaction`)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(settings)
    if isinstance(settings, Settings):
        scheme, sep, rest = settings.storage.url.partition("://")
        creds = rest.rpartition("@")[0] if sep else ""
        if ":" in creds:
            found.append(creds.split(":", 1)[1])
    return found


def _mask(secret: SecretStr | None) -> str:
    if secret is None:
        return "(not set)"
    value = secret.get_secret_value()
    return f"{value[:4]}…(hidden)" if len(value) > 8 else "(hidden)"


def _redact_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
