"""The composition root: builds the running bridge from `Settings` and wires the concrete pieces.

This is the only module of `bridge/` that imports the adapters and storage; everything it builds
receives its configuration and collaborators explicitly.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.llm import OpenAICompatibleModel
from bridge import logs
from bridge.attachments import AttachmentLimits, Attachments
from bridge.config import Settings, secret_values, warnings
from bridge.controls import ReplyControls
from bridge.edits import UserEdits
from bridge.housekeeping import Housekeeping
from bridge.lifecycle import Lifecycle, Service
from bridge.metrics import Registry
from bridge.ownership import Liveness
from bridge.policy import PolicyParts, build_policy
from bridge.policy.policy import WallClock
from bridge.ports import LanguageModel
from bridge.recovery import Recovery
from bridge.redaction import Redactor
from bridge.reload import ConfigReloader
from bridge.responder import Responder, ResponderSettings
from bridge.scheduler import EditScheduler
from bridge.telemetry import BridgeMetrics
from bridge.tools.loop import ToolLoopSettings, Tools
from storage import SqlChatStore, create_engine, migrate, sqlite_path
from storage.files import DirectoryVault, files_dir_for
from storage.migrate import current_revision, head_revision

if TYPE_CHECKING:
    from adapters.console.live import LiveHub
    from adapters.console.section import ConsoleSection
    from adapters.discord import DiscordAdapter
    from adapters.slack import SlackAdapter
    from bridge.cluster import Cluster

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The bridge cannot start; the message says what to do."""


async def migrate_database(settings: Settings) -> str | None:
    await migrate(settings.storage.url)
    return await current_revision(settings.storage.url)


async def prepare_database(settings: Settings) -> None:
    """SQLite is migrated on start; other databases must have been migrated explicitly."""
    url = settings.storage.url
    if url.startswith("sqlite"):
        await migrate(url)
        return
    revision = await current_revision(url)
    if revision != (head := head_revision()):
        raise StartupError(
            f"the database is at revision {revision or 'none'}, not {head}: "
            "run `chat-bridge migrate --config FILE` first"
        )


@dataclass
class Bridge:
    """Everything `run` starts, in start order (stopped in reverse)."""

    settings: Settings
    store: SqlChatStore
    llm: LanguageModel
    scheduler: EditScheduler
    responder: Responder
    lifecycle: Lifecycle
    services: list[Service] = field(default_factory=list)
    close: Callable[[], Any] | None = None
    # Always kept, served only when ops.enabled: tests and benchmarks read it in-process.
    metrics: BridgeMetrics = field(default_factory=lambda: BridgeMetrics(Registry()))
    recovery: Recovery | None = None
    policy: PolicyParts | None = None
    reloader: ConfigReloader | None = None


async def build(
    settings: Settings,
    *,
    llm: LanguageModel | None = None,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    handle_signals: bool = False,
    wall: WallClock | None = None,
) -> Bridge:
    """`config_path`: the file to reload on SIGHUP (with `handle_signals`) or when it changes;
    `environ`: the environment it was read with (None: os.environ)."""
    await prepare_database(settings)
    engine = create_engine(settings.storage.url)
    owner = uuid.uuid4().hex
    store = SqlChatStore(engine, owner=owner)
    model = llm or OpenAICompatibleModel(settings.llm)
    scheduler = EditScheduler(interval=settings.streaming.edit_interval)
    metrics = BridgeMetrics(Registry(), settings.enabled_platforms())
    controls = ReplyControls(
        store=store,
        on_vote=metrics.vote,
        stop_button=settings.streaming.stop_button,
        feedback_buttons=settings.streaming.feedback_buttons,
    )
    vault = DirectoryVault(files_dir_for(settings.storage))

    def attachment_limits() -> AttachmentLimits:
        limits = policy.policy.settings.limits  # [limits] reloads live
        return AttachmentLimits(
            max_bytes=limits.max_attachment_bytes,
            max_images=limits.max_images_per_message,
            max_text_bytes=limits.max_text_attachment_bytes,
            image_max_side=settings.llm.image_max_side,
            images=settings.llm.vision is not False,
        )

    attachments = Attachments(store=store, vault=vault, limits=attachment_limits)
    # The config's secrets, cut out of tool traffic and of every console page.
    redactor = Redactor(secret_values(settings))
    toolbox = None
    if settings.mcp.servers:
        from adapters.mcp import MCPToolBox

        toolbox = MCPToolBox(settings.mcp)
    tools = Tools(
        toolbox,
        ToolLoopSettings(
            max_rounds=settings.llm.max_tool_rounds,
            max_result_chars=settings.mcp.max_result_chars,
            footer=settings.mcp.footer,
        ),
        redactor,
        clock=time.perf_counter,
    )
    live = None
    if settings.console.enabled:
        from adapters.console.live import LiveHub

        live = LiveHub()  # this process's replies streaming now, for the console's live page
    responder = Responder(
        store=store,
        llm=model,
        scheduler=scheduler,
        settings=ResponderSettings.from_config(
            settings.llm,
            settings.streaming,
            recovery=settings.recovery,
            storage=settings.storage,
            notices=settings.notices,
        ),
        observer=metrics,
        controls=controls,
        attachments=attachments,
        tools=tools,
        feed=live,
    )
    lifecycle = Lifecycle()
    policy = build_policy(settings, responder=responder, store=store, wall=wall)
    controls.set_admin_check(policy.commands.is_admin)
    edits = UserEdits(store=store, in_flight=responder.begun)
    platforms = _platforms(settings, responder, store, lifecycle, policy, controls, edits)
    for platform in platforms:
        attachments.add_source(platform.platform, platform.files)

    async def known_dead(run: str) -> bool:
        now = datetime.now(UTC)
        record = next((o for o in await store.owners() if o.id == run), None)
        return record is None or liveness.is_dead(record, now)

    cluster = None
    if settings.cluster.enabled:
        cluster = _cluster(settings, store, platforms, policy, known_dead, controls)
    owner_timeout = settings.recovery.owner_timeout
    if cluster is not None:
        # The cluster's ticks beat the heartbeat: a dead instance is known when its leases end.
        owner_timeout = min(owner_timeout, settings.cluster.takeover_seconds)
    taken_from = cluster.keeper.taken_from if cluster is not None else ()
    liveness = Liveness.of_this_process(owner, owner_timeout, taken_from)
    recovery = Recovery(
        store=store,
        responder=responder,
        places=platforms,
        liveness=liveness,
        answer_within=settings.recovery.answer_within,
        feed=live,
        settles=(
            None
            if cluster is None
            else lambda chat: cluster.router.may_settle(chat.platform, chat.workspace)
        ),
    )
    retention_days = settings.storage.retention_days
    housekeeping = Housekeeping(
        store,
        liveness=liveness,
        recovery=recovery,
        settings=settings.recovery,
        event_retention=settings.storage.event_retention_hours * 3600,
        message_retention=retention_days * 86400 if retention_days else None,
        runs_maintenance=None if cluster is None else cluster.runs_maintenance,
        files=vault,
    )
    if cluster is not None:
        cluster.after_gain(lambda _lease: housekeeping.sweep())
    # Housekeeping starts before the platforms (this process is a registered owner before it
    # stores anything) and recovers once every platform is connected (`running`).
    # The policy loads the runtime overrides admins set in chat before any message arrives.
    services: list[Service] = [housekeeping, policy.policy]
    reloader = None
    if config_path is not None:
        reloader = ConfigReloader(
            config_path, policy.policy, environ=environ, handle_signals=handle_signals
        )
        services.append(reloader)
    if cluster is not None:
        # Before the platforms: events handed over while they start wait in the queue; stopped
        # after the drain, when its leases are released to the next holders.
        services.append(cluster)
    if isinstance(model, OpenAICompatibleModel):
        services.insert(0, model)
    if toolbox is not None:
        # Before the platforms: servers connect in the background; until one is up, its tools
        # are simply not offered.
        services.append(toolbox)
    if settings.console.enabled:
        services.append(_console(settings, store, policy, live, redactor))
    services.extend(platforms)
    # The platforms stop taking events first (stop_intake); then the responder stops first of all
    # and drains its replies while the platforms can still show them.
    services.append(responder)
    if settings.ops.enabled:
        from adapters.ops import OpsServer

        # First to start and last to stop: /healthz says 503 while anything else starts or stops.
        ops = OpsServer(
            settings.ops, registry=metrics.registry, lifecycle=lifecycle, platforms=platforms
        )
        services.insert(0, ops)
    return Bridge(
        settings,
        store,
        model,
        scheduler,
        responder,
        lifecycle,
        services,
        engine.dispose,
        metrics,
        recovery,
        policy,
        reloader,
    )


def _cluster(
    settings: Settings,
    store: SqlChatStore,
    platforms: list[SlackAdapter | DiscordAdapter],
    policy: PolicyParts,
    known_dead: Callable[[str], Awaitable[bool]],
    controls: ReplyControls,
) -> Cluster:
    from bridge.cluster import Cluster, LeaseTiming

    config = settings.cluster
    instance = config.instance_id or f"{socket.gethostname()}:{os.getpid()}"
    cluster = Cluster(
        store,
        instance=instance[:64],
        timing=LeaseTiming(config.lease_seconds, config.takeover_seconds),
        places=platforms,
        heartbeat=store.heartbeat,
        discord_shards=settings.discord.shard_count,
        known_dead=known_dead,
        outage_tolerance=settings.storage.outage_tolerance,
    )
    policy.intake.route_through(cluster.router)
    cluster.on_overrides(policy.policy.refresh_runtime)
    # A Stop reaches whichever instance the platform chose; the one writing the reply stops it.
    controls.relay_through(cluster.relay_stop)
    cluster.on_stop(controls.relayed)
    log.info("cluster: instance %s", instance)
    return cluster


def _platforms(
    settings: Settings,
    responder: Responder,
    store: SqlChatStore,
    lifecycle: Lifecycle,
    policy: PolicyParts,
    controls: ReplyControls,
    edits: UserEdits,
) -> list[SlackAdapter | DiscordAdapter]:
    platforms: list[SlackAdapter | DiscordAdapter] = []
    if settings.slack.enabled:
        from adapters.slack import SlackAdapter

        platforms.append(
            SlackAdapter(
                settings.slack,
                responder=responder,
                store=store,
                lifecycle=lifecycle,
                intake=policy.intake,
                commands=policy.commands,
                controls=controls,
                edits=edits,
            )
        )
    if settings.discord.enabled:
        from adapters.discord import DiscordAdapter

        platforms.append(
            DiscordAdapter(
                settings.discord,
                responder=responder,
                store=store,
                lifecycle=lifecycle,
                intake=policy.intake,
                commands=policy.commands,
                reset_admins_only=settings.access.reset == "admins",
                guild_ready_timeout=settings.discord.guild_ready_timeout,
                controls=controls,
                edits=edits,
            )
        )
    return platforms


def _console(
    settings: Settings,
    store: SqlChatStore,
    policy: PolicyParts,
    live: LiveHub | None,
    redactor: Redactor,
) -> Service:
    """The admin console and its parts. Before the platforms, after the store it reads: an
    admin can look while they connect."""
    from adapters.console import ConsoleServer
    from adapters.console.live import LiveSection
    from adapters.console.settings import SettingsSection
    from adapters.console.usage import UsageSection

    sections: list[ConsoleSection] = []
    if live is not None:
        sections.append(LiveSection(live, redact=redactor.redact))
    sections.append(
        UsageSection(
            store,
            limits=lambda: policy.policy.settings.limits,  # [limits] reloads live: the quotas
            today=policy.policy.today,  # the quotas' UTC day
            redact=redactor.redact,
        )
    )
    # The admin commands' own actions: a change on the page reaches the next message as
    # `/bridge model` does (same store call, same policy cache).
    sections.append(SettingsSection(policy.commands.actions, browser=store))
    return ConsoleServer(settings.console, browser=store, redact=redactor.redact, sections=sections)


def console_password_hash(password: str) -> str:
    """`chat-bridge console-password`: the argon2id hash for console.password_hash."""
    from adapters.console import hash_password

    return hash_password(password)


def discord_invite(settings: Settings) -> str:
    """The OAuth2 URL that adds the bot to a server with the scopes and permissions it needs."""
    from adapters.discord import invite_url

    return invite_url(settings)


async def list_tools(settings: Settings) -> tuple[list[str], bool]:
    """`chat-bridge tools`: each MCP server's tools, as lines; False when one was unreachable."""
    from adapters.mcp import format_tools
    from adapters.mcp import list_tools as listing

    found = await listing(settings.mcp)
    return format_tools(found), not any(server.error for server in found)


def slack_manifest(settings: Settings) -> tuple[str, list[str]]:
    """The Slack app manifest (JSON) and the notes a person needs beside it."""
    from adapters.slack import manifest_notes, render_manifest

    return render_manifest(settings), manifest_notes(settings)


def limit_malloc_arenas(environ: Mapping[str, str] = os.environ) -> bool:
    """Cap glibc's malloc arenas at 2 unless MALLOC_ARENA_MAX is set.

    Each thread (aiosqlite connections, the DNS resolver pool) otherwise gets an arena of its
    own, and a thousand streaming replies fragment them: measured, peak RSS 297 MB instead of
    203 MB for the same run. A no-op where the C library is not glibc.
    """
    if "MALLOC_ARENA_MAX" in environ or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_arena_max = -8  # from glibc's malloc.h
        return bool(libc.mallopt(m_arena_max, 2))
    except (OSError, AttributeError):
        return False


# Young-generation collections after this many new container objects (CPython's default: 700).
GC_THRESHOLDS = (10_000, 10, 10)


def tune_garbage_collector() -> None:
    """Keep the cyclic garbage collector off the streaming path; call once everything is built.

    What exists at that point (modules, settings, adapters, pools) lives as long as the process:
    `gc.freeze` takes it out of every later collection. Streaming creates a few objects per delta
    that refcounting frees at once; at CPython's default threshold they still set off a young
    collection every 700 and, with hundreds of replies in flight, a full one every few seconds that
    stopped the event loop for 150-200 ms. Measured with `bench.responder` (1,000 replies): 5.3 s of
    the run's 35 s of CPU went to collections before, 0.4 s after.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def run(
    settings: Settings, *, handle_signals: bool = True, config_path: Path | None = None
) -> int:
    limit_malloc_arenas()
    logs.configure(settings.logging.level, settings.logging.json_format, secret_values(settings))
    for warning in warnings(settings):
        log.warning("%s", warning)
    path = sqlite_path(settings.storage.url)
    if path is not None:
        log.info("storage: SQLite at %s", path.resolve())
    try:
        bridge = await build(settings, config_path=config_path, handle_signals=handle_signals)
    except StartupError as exc:
        log.error("%s", exc)
        return 1
    tune_garbage_collector()
    try:
        return await bridge.lifecycle.run(bridge.services, handle_signals=handle_signals)
    finally:
        await bridge.store.close()
        if bridge.close is not None:
            await bridge.close()
