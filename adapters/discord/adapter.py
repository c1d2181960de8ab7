"""`DiscordAdapter`: the Discord platform as a Service of the bridge.

It connects discord.py to the gateway, turns messages into the core's `InboundMessage` and
`Origin` and hands them to the core's `Intake` (which decides whether and how each is answered,
written through a `DiscordReplySurface`), and registers the slash commands that run the core's
admin commands. Without the privileged message-content intent it either answers mentions only or
stops the bridge, as configured, with one line that says what to enable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import discord

from adapters.discord.commands import command_tree, sync_commands
from adapters.discord.events import PLATFORM, BotView, Trigger, trigger_for
from adapters.discord.gateway import (
    DiscordGatewayError,
    Endpoints,
    GatewayClient,
    bridge_intents,
    connect_until_ready,
    log_in,
)
from adapters.discord.indicators import TypingIndicators
from adapters.discord.ratelimits import RateHeaderCapture
from adapters.discord.surface import DiscordReplySurface
from bridge.admin import AdminCommands
from bridge.config import DiscordSettings
from bridge.domain import ChatKey, StoredMessage
from bridge.intake import Intake
from bridge.lifecycle import AccessRevoked, Lifecycle
from bridge.policy.effective import EffectiveSettings
from bridge.ports import ChatStore, MessageLimit
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
    ) -> None:
        """`reset_admins_only`: `access.reset = "admins"`, which /reset's default permission
        follows (Discord's client then offers it to members with Manage Server only)."""
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
        self._capture = RateHeaderCapture()
        self._typing = TypingIndicators()
        self._client: GatewayClient | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._view: BotView | None = None
        self._stopping = False
        self._answering: set[asyncio.Task[None]] = set()

    @property
    def client(self) -> GatewayClient | None:
        return self._client

    @property
    def connected(self) -> bool:
        """The gateway session is READY and its WebSocket open (for /healthz and the metrics)."""
        client = self._client
        if client is None or client.is_closed() or not client.is_ready():
            return False
        return client.ws is not None and client.ws.open

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
            await sync_commands(self._client.tree, self._settings.command_guilds)
        except BaseException:
            if self._client is not None:
                await self._client.close()
            self._endpoints.restore()
            raise
        self._watcher = asyncio.get_running_loop().create_task(self._watch(connection))

    async def stop(self) -> None:
        self._stopping = True
        if self._answering:
            # The responder stops first and drains its replies; this only catches stragglers,
            # while the client can still write their final state.
            _, late = await asyncio.wait(set(self._answering), timeout=STOP_GRACE)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._typing.close()
        if self._client is not None:
            # A closed client makes connect() return; the watcher then ends by itself.
            await self._client.close()
        if self._watcher is not None:
            await asyncio.wait({self._watcher}, timeout=10)
        self._endpoints.restore()

    async def _connect(self, *, message_content: bool) -> asyncio.Task[None]:
        client = GatewayClient(
            on_message=self._on_message,
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
        # Known before the gateway delivers anything, so no early message finds it missing.
        self._view = BotView(
            user_id=bot_user_id,
            auto_thread=self._settings.auto_thread,
            ignore_other_bots=self._settings.ignore_other_bots,
            mention_only=not message_content,
        )
        return await connect_until_ready(client, ready_within=self._ready_timeout)

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
        )

    # --- messages ----------------------------------------------------------------------------

    def _on_message(self, message: discord.Message) -> None:
        """Called as discord.py parses a MESSAGE_CREATE: decide now, hand it to the core in a
        task."""
        view, client = self._view, self._client
        if view is None or client is None or self._stopping:
            return
        trigger = trigger_for(message, view)
        if trigger is None:
            return

        def surface(effective: EffectiveSettings) -> DiscordReplySurface:
            # Nothing of `effective` concerns Discord's side (native streaming is Slack's).
            return DiscordReplySurface(
                message,
                client=client,
                bot_user_id=view.user_id,
                capture=self._capture,
                typing=self._typing,
                scheduler=self._responder.scheduler,
                open_thread=trigger.open_thread,
                thread_name=_provisional_thread_name(trigger.inbound.text),
            )

        task = asyncio.get_running_loop().create_task(self._answer(trigger, surface))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _answer(
        self, trigger: Trigger, surface: Callable[[EffectiveSettings], DiscordReplySurface]
    ) -> None:
        try:
            await self._intake.receive(trigger.inbound, trigger.origin, surface)
        except Exception:
            log.exception(
                "discord: message %s could not be answered", trigger.inbound.platform_message_id
            )


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
