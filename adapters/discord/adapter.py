"""`DiscordAdapter`: the Discord platform as a Service of the bridge.

It connects discord.py to the gateway, turns messages into the core's `InboundMessage` and
`Origin` and hands them to the core's `Intake` (which decides whether and how each is answered,
written through a `DiscordReplySurface`), and registers the slash commands that run the core's
admin commands. Without the privileged message-content intent it either answers mentions only or
stops the bridge, as configured, with one line that says what to enable. With `shard_count` it
connects only its shards (their guilds; shard 0 also the DMs) and writes within their share of the
bot's global limit; with `catch_up_minutes` it first answers the mentions it missed while down.
Files on messages go to the core as `AttachmentRef`s, which `files` downloads; clicks on a reply's
buttons and 🛑 reactions go to the core's `ReplyControls`, users' edits and deletions to its
`UserEdits`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import discord

from adapters.discord.catch_up import CatchUp
from adapters.discord.commands import command_tree, sync_commands
from adapters.discord.components import ButtonsWanted
from adapters.discord.controls import ReplyButtons
from adapters.discord.edits import MessageChanges
from adapters.discord.events import PLATFORM, BotView, Trigger, trigger_for
from adapters.discord.files import DiscordFiles
from adapters.discord.gateway import (
    DEFAULT_API,
    DiscordGatewayError,
    Endpoints,
    GatewayClient,
    bridge_intents,
    connect_until_ready,
    gateway_open,
    log_in,
    new_client,
    ready_within,
)
from adapters.discord.handoff import HandedMessage, from_payload, to_payload
from adapters.discord.indicators import TypingIndicators
from adapters.discord.ratelimits import RateHeaderCapture
from adapters.discord.shards import ShardPlan
from adapters.discord.surface import GLOBAL_LIMIT, DiscordReplySurface, global_bucket
from bridge.admin import AdminCommands
from bridge.cluster.handoffs import NotReady
from bridge.cluster.router import shard_lease
from bridge.config import DiscordSettings
from bridge.controls import ReplyControls
from bridge.domain import ChatKey, StoredMessage
from bridge.edits import UserEdits
from bridge.intake import Intake
from bridge.lifecycle import AccessRevoked, Lifecycle
from bridge.policy.effective import EffectiveSettings
from bridge.ports import ChatStore, MessageLimit, RateBucket
from bridge.responder import Responder

log = logging.getLogger(__name__)

MISSING_INTENT = (
    "discord: the bot may not read message content: enable it in the Discord developer portal "
    "(your application → Bot → Privileged Gateway Intents → Message Content Intent)"
)
ANSWERING_MENTIONS = "; until then only mentions and DMs are answered"
STOP_GRACE = 5.0
OR_MENTION_ONLY = "; or set discord.mention_only_without_intent = true to answer mentions only"


class DiscordAdapter:
    """Service "discord": `start` returns once the gateway is READY, or raises a clear error."""

    def __init__(
        self,
        settings: DiscordSettings,
        *,
        responder: Responder,
        store: ChatStore,
        lifecycle: Lifecycle,
        intake: Intake,
        commands: AdminCommands,
        reset_admins_only: bool = False,
        guild_ready_timeout: float = 2.0,
        ready_timeout: float = 60.0,
        controls: ReplyControls | None = None,
        edits: UserEdits | None = None,
    ) -> None:
        """`reset_admins_only`: `access.reset = "admins"`, which /reset's default permission
        follows (Discord's client then offers it to members with Manage Server only).
        `controls`: Stop and feedback (buttons, 🛑); `edits`: users' edits and deletions reach
        the stored history. None: that feature is off."""
        if settings.token is None:
            raise ValueError("discord.token is not set")
        self.name = "discord"
        self.platform = PLATFORM
        self._settings = settings
        self._token = settings.token.get_secret_value()
        self._responder = responder
        self._store = store
        self._lifecycle = lifecycle
        self._intake = intake
        self._commands = commands
        self._reset_admins_only = reset_admins_only
        # discord.py waits this long for GUILD_CREATEs after READY before it reports ready.
        self._guild_ready_timeout = guild_ready_timeout
        self._ready_timeout = ready_timeout
        self._endpoints = Endpoints(settings)
        self._plan = ShardPlan.of(settings)
        self._global: RateBucket | None = None
        self._catch_up: asyncio.Task[None] | None = None
        self._capture = RateHeaderCapture()
        self._typing = TypingIndicators()
        self._client: GatewayClient | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._view: BotView | None = None
        self._stopping = False
        self._answering: set[asyncio.Task[bool]] = set()
        self._controls = controls
        self._buttons = ReplyButtons(controls, bot_user_id=self._bot_user_id) if controls else None
        self._changes = MessageChanges(edits, view=lambda: self._view) if edits else None
        # Clicks, reactions, edits and deletions being handled.
        self._side: set[asyncio.Task[None]] = set()
        # The core's FileSource for Discord: attachments from the CDN (the configured API's host
        # too when it is not Discord's: an emulator or a proxy serves the files there).
        api_host = urlsplit(self._endpoints.api).hostname or ""
        default_host = urlsplit(DEFAULT_API).hostname
        self.files = DiscordFiles(extra_hosts=[api_host] if api_host != default_host else [])

    @property
    def client(self) -> GatewayClient | None:
        return self._client

    @property
    def connected(self) -> bool:
        """Every gateway session (one per shard) is READY and its WebSocket open (for /healthz
        and the metrics)."""
        return self._client is not None and gateway_open(self._client)

    @property
    def shard_ids(self) -> tuple[int, ...]:
        """The shards of the bot's gateway this process connects (0 alone when unsharded)."""
        return self._plan.ids

    @property
    def global_budget(self) -> RateBucket | None:
        """This process's share of the bot's global limit, which every reply draws from."""
        return self._global

    @property
    def catching_up(self) -> asyncio.Task[None] | None:
        """The catch-up started once connected (with `catch_up_minutes`), done or not."""
        return self._catch_up

    @property
    def mention_only(self) -> bool:
        """True while the bot runs without the message-content intent."""
        return self._view is not None and self._view.mention_only

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self._endpoints.apply()
        try:
            try:
                connection = await self._connect(message_content=True)
            except discord.PrivilegedIntentsRequired:
                self._without_message_content()
                connection = await self._connect(message_content=False)
            assert self._client is not None and self._client.tree is not None
            if self._plan.registers_commands:
                await sync_commands(self._client.tree, self._settings.command_guilds)
        except BaseException:
            if self._client is not None:
                await self._client.close()
            self._endpoints.restore()
            raise
        loop = asyncio.get_running_loop()
        self._watcher = loop.create_task(self._watch(connection))
        if self._plan.sharded and self._global is not None:
            log.info("%s", self._plan.connected_line(len(self._client.guilds), self._global))
        if self._settings.catch_up_minutes > 0:
            self._catch_up = loop.create_task(self._catch_up_missed())

    async def stop(self) -> None:
        self._stopping = True
        if self._catch_up is not None:
            self._catch_up.cancel()
            await asyncio.gather(self._catch_up, return_exceptions=True)
        if self._answering:
            # The responder stops first and drains its replies; this only catches stragglers,
            # while the client can still write their final state.
            _, late = await asyncio.wait(set(self._answering), timeout=STOP_GRACE)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._side:
            _, late_side = await asyncio.wait(set(self._side), timeout=STOP_GRACE)
            for side in late_side:
                side.cancel()
            await asyncio.gather(*late_side, return_exceptions=True)
        await self.files.close()
        await self._typing.close()
        if self._client is not None:
            # A closed client makes connect() return; the watcher then ends by itself.
            await self._client.close()
        if self._watcher is not None:
            await asyncio.wait({self._watcher}, timeout=10)
        self._endpoints.restore()

    async def _connect(self, *, message_content: bool) -> asyncio.Task[None]:
        client = new_client(
            self._plan,
            on_message=self._on_message,
            on_raw=self._on_raw,
            intents=bridge_intents(message_content=message_content),
            http_trace=self._capture.trace_config,
            guild_ready_timeout=self._guild_ready_timeout,
        )
        client.tree = command_tree(
            client,
            store=self._store,
            commands=self._commands,
            reset_admins_only=self._reset_admins_only,
        )
        self._client = client
        bot_user_id = await log_in(client, self._token, api=self._endpoints.api)
        self._global = global_bucket(bot_user_id, self._plan.share_of(GLOBAL_LIMIT))
        # Known before the gateway delivers anything, so no early message finds it missing.
        self._view = BotView(
            user_id=bot_user_id,
            auto_thread=self._settings.auto_thread,
            ignore_other_bots=self._settings.ignore_other_bots,
            mention_only=not message_content,
        )
        within = ready_within(self._plan, self._ready_timeout)
        return await connect_until_ready(client, ready_within=within)

    async def _catch_up_missed(self) -> None:
        view, client, budget = self._view, self._client, self._global
        if view is None or client is None or budget is None:
            return
        catch_up = CatchUp(
            client,
            bot_user_id=view.user_id,
            minutes=self._settings.catch_up_minutes,
            scheduler=self._responder.scheduler,
            capture=self._capture,
            global_budget=budget,
            hand=self._on_message,
        )
        try:
            await catch_up.run()
        except Exception:
            log.exception("discord: the catch-up of missed mentions failed")

    def _without_message_content(self) -> None:
        """The gateway closed with 4014: say what to enable, then fall back or stop the bridge."""
        if self._settings.mention_only_without_intent:
            log.warning("%s%s", MISSING_INTENT, ANSWERING_MENTIONS)
            return
        error = DiscordGatewayError(MISSING_INTENT + OR_MENTION_ONLY)
        log.error("%s", error)
        self._lifecycle.fail(error)
        raise error

    async def _watch(self, connection: asyncio.Task[None]) -> None:
        """Runs while connected; a connection that ends on its own ends the bridge (or, for a
        revoked intent, reconnects in mention-only mode if so configured)."""
        while True:
            try:
                await connection
            except discord.PrivilegedIntentsRequired:
                if self._stopping:
                    return
                try:
                    self._without_message_content()
                    if self._client is not None:
                        await self._client.close()
                    connection = await self._connect(message_content=False)
                except DiscordGatewayError as exc:
                    self._lifecycle.fail(exc)
                    return
                continue
            except discord.ConnectionClosed as exc:
                if not self._stopping:
                    self._lifecycle.fail(_closed_for_good(exc))
                return
            except Exception as exc:
                if not self._stopping:
                    message = f"discord: the gateway connection ended: {type(exc).__name__}: {exc}"
                    log.error("%s", message)
                    self._lifecycle.fail(DiscordGatewayError(message))
                return
            if not self._stopping:
                self._lifecycle.fail(DiscordGatewayError("discord: the gateway connection closed"))
            return

    async def stop_intake(self) -> None:
        """Nothing to do: Discord never delivers a dispatched message again, and disconnecting
        early would only leave messages sent meanwhile unseen by any instance. What arrives
        during the drain is answered (or ended with a notice at its deadline)."""

    def surface_for(
        self,
        chat: ChatKey,
        user_message: StoredMessage,
        *,
        adopt: Sequence[str] = (),
        limit: MessageLimit | None = None,
    ) -> DiscordReplySurface | None:
        """A reply to a stored message (crash recovery) in its channel or thread. Discord
        messages hold 2,000 characters whatever the reply was laid out with."""
        view, client = self._view, self._client
        if view is None or client is None or not self.connected:
            return None
        guild_id = int(chat.workspace) if chat.workspace else None
        channel = client.get_partial_messageable(int(chat.channel), guild_id=guild_id)
        message_id = (
            user_message.platform_message_ids[0] if user_message.platform_message_ids else 0
        )
        source = channel.get_partial_message(int(message_id))
        return DiscordReplySurface(
            source,
            client=client,
            bot_user_id=view.user_id,
            capture=self._capture,
            typing=self._typing,
            scheduler=self._responder.scheduler,
            global_budget=self._global,
            buttons=self._buttons_wanted(),
        )

    # --- messages ----------------------------------------------------------------------------

    def _on_message(self, message: discord.Message) -> asyncio.Task[bool] | None:
        """Called as discord.py parses a MESSAGE_CREATE (and by the catch-up for a message read
        from history): decide now, hand it to the core in a task, which tells whether the core
        answered it."""
        view, client = self._view, self._client
        if view is None or client is None or self._stopping:
            return None
        trigger = trigger_for(message, view)
        if trigger is None:
            return None

        surface = self._surfaces(message, trigger, client, view)
        handed = HandedMessage(
            trigger.inbound,
            trigger.origin,
            trigger.open_thread,
            guild_id=message.guild.id if message.guild is not None else None,
            channel_id=message.channel.id,
            message_id=message.id,
        )
        answering = self._answer(trigger, surface, functools.partial(to_payload, handed))
        task = asyncio.get_running_loop().create_task(answering)
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)
        return task

    # --- several instances ([cluster]) ---------------------------------------------------------

    def leases_served(self) -> list[str]:
        """This process's shards, once it has connected: a gateway reconnect keeps them (its
        replies still go out over REST, and the events it missed are replayed on resume)."""
        if self._view is None:
            return []
        return [shard_lease(shard) for shard in self.shard_ids]

    async def take_handoff(self, payload: Mapping[str, Any]) -> None:
        """A message another instance received for a shard whose lease this one holds."""
        handed = from_payload(payload)
        view, client = self._view, self._client
        if view is None or client is None:
            raise NotReady("discord is not connected")
        channel = client.get_partial_messageable(handed.channel_id, guild_id=handed.guild_id)
        source = channel.get_partial_message(handed.message_id)
        trigger = Trigger(handed.inbound, handed.origin, handed.open_thread)
        surface = self._surfaces(source, trigger, client, view)
        # Answered here (not handed on again, even if the lease moved meanwhile: its stored
        # claim keeps it from being answered twice); failures reach the consumer, which retries.
        await self._intake.receive(trigger.inbound, trigger.origin, surface)

    def _surfaces(
        self,
        source: discord.Message | discord.PartialMessage,
        trigger: Trigger,
        client: GatewayClient,
        view: BotView,
    ) -> Callable[[EffectiveSettings], DiscordReplySurface]:
        """The reply's surface: under `source`, or in the thread it opens."""

        def surface(effective: EffectiveSettings) -> DiscordReplySurface:
            # Nothing of `effective` concerns Discord's side (native streaming is Slack's).
            return DiscordReplySurface(
                source,
                client=client,
                bot_user_id=view.user_id,
                capture=self._capture,
                typing=self._typing,
                scheduler=self._responder.scheduler,
                open_thread=trigger.open_thread,
                thread_name=_provisional_thread_name(trigger.inbound.text),
                global_budget=self._global,
                buttons=self._buttons_wanted(),
            )

        return surface

    def _buttons_wanted(self) -> ButtonsWanted | None:
        controls = self._controls
        if controls is None:
            return None
        return ButtonsWanted(stop=controls.stop_button, feedback=controls.feedback_buttons)

    # --- clicks, reactions, edits and deletions ------------------------------------------------

    def _bot_user_id(self) -> int | None:
        return self._view.user_id if self._view is not None else None

    def _on_raw(self, event: str, payload: Any) -> None:
        """Called as discord.py parses a click, a reaction, an edit or a deletion; handled in a
        task (a click is acknowledged first thing there)."""
        client = self._client
        if client is None or self._stopping:
            return
        handling: Coroutine[Any, Any, None] | None = None
        buttons, changes = self._buttons, self._changes
        if event == "interaction" and buttons is not None and buttons.concerns(payload):
            handling = buttons.clicked(payload)
        elif event == "raw_reaction_add" and buttons is not None:
            handling = buttons.reacted(payload, client)
        elif event == "raw_message_edit" and changes is not None:
            handling = changes.edited(payload)
        elif event == "raw_message_delete" and changes is not None:
            handling = changes.deleted(payload, client)
        if handling is None:
            return
        task = asyncio.get_running_loop().create_task(_logged(handling, event))
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    async def _answer(
        self,
        trigger: Trigger,
        surface: Callable[[EffectiveSettings], DiscordReplySurface],
        handoff: Callable[[], Mapping[str, Any]] | None = None,
    ) -> bool:
        try:
            report = await self._intake.receive(
                trigger.inbound, trigger.origin, surface, handoff=handoff
            )
            return report is not None
        except Exception:
            log.exception(
                "discord: message %s could not be answered", trigger.inbound.platform_message_id
            )
            return False


async def _logged(handling: Coroutine[Any, Any, None], event: str) -> None:
    try:
        await handling
    except Exception:
        log.exception("discord: %s could not be handled", event)


def _closed_for_good(exc: discord.ConnectionClosed) -> Exception:
    if exc.code == 4004:
        return AccessRevoked(
            "discord: the gateway rejected the token (4004): it was reset or revoked; copy the "
            "new one from the developer portal into discord.token"
        )
    message = f"discord: the gateway connection closed with code {exc.code} {exc.reason or ''}"
    log.error("%s", message.strip())
    return DiscordGatewayError(message.strip())


def _provisional_thread_name(text: str) -> str:
    """The thread's name until the generated title replaces it: the question's first line."""
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    return first_line if len(first_line) <= 80 else first_line[:79].rstrip() + "…"
