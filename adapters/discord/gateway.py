"""The discord.py client the adapter runs: its intents, its shards, its endpoints, and connecting
until READY.

discord.py takes its REST base and gateway URL from two class attributes, not from a client option,
so `Endpoints` sets them for as long as the adapter runs (only where the config differs from
Discord's defaults) and puts the old values back afterwards.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import discord
import discord.gateway
import discord.http
import yarl
from discord import app_commands

from adapters.discord.shards import ShardPlan
from bridge.config import DiscordSettings
from bridge.lifecycle import AccessRevoked

log = logging.getLogger(__name__)

DEFAULT_API = str(DiscordSettings.model_fields["api_base_url"].default)
DEFAULT_GATEWAY = str(DiscordSettings.model_fields["gateway_url"].default)

OnMessage = Callable[[discord.Message], object]
# Called with discord.py's event name and its argument, for the events in RAW_EVENTS.
OnRaw = Callable[[str, Any], object]
# Edits and deletions (raw: whether or not discord.py cached the message), reactions, clicks.
RAW_EVENTS = frozenset(
    {"raw_message_edit", "raw_message_delete", "raw_reaction_add", "interaction"}
)
# discord.py identifies a process's shards one after another, 5 s apart (one IDENTIFY per 5 s is
# what Discord allows a bot without large-bot concurrency).
IDENTIFY_SPACING = 5.0


class DiscordGatewayError(RuntimeError):
    """The bridge cannot stay connected to Discord; the message says what to do."""


def bridge_intents(*, message_content: bool) -> discord.Intents:
    """Guild and DM messages, and their text when the privileged intent is granted; reactions
    in both (a 🛑 stops a reply). Interactions (button clicks) need no intent."""
    intents = discord.Intents.none()
    intents.guilds = True  # channels and threads (THREAD_CREATE tells us who opened a thread)
    intents.guild_messages = True
    intents.dm_messages = True
    intents.guild_reactions = True
    intents.dm_reactions = True
    intents.message_content = message_content
    return intents


class GatewayClient(discord.Client):
    """A plain discord.Client that hands messages to the adapter and carries the command tree."""

    def __init__(
        self,
        *,
        on_message: OnMessage,
        intents: discord.Intents,
        http_trace: aiohttp.TraceConfig,
        guild_ready_timeout: float,
        on_raw: OnRaw | None = None,
        **shards: Any,
    ) -> None:
        """`shards`: `shard_count` and `shard_ids` for the sharded client."""
        super().__init__(
            intents=intents,
            # The default for everything discord.py sends; each write also passes it explicitly.
            allowed_mentions=discord.AllowedMentions.none(),
            # No message cache: the bridge keeps its own history and reads raw events, and
            # discord.py's cache (1,000 messages a process by default, every message of every
            # guild the shard sees) grew each instance's memory for its first 17 minutes.
            max_messages=None,
            http_trace=http_trace,
            guild_ready_timeout=guild_ready_timeout,
            **shards,
        )
        self._message_created = on_message
        self._raw = on_raw
        self.tree: app_commands.CommandTree[discord.Client] | None = None

    def dispatch(self, event: str, /, *args: Any, **kwargs: Any) -> None:
        # discord.py calls this while it parses MESSAGE_CREATE, but runs `on_message` in a task
        # that may start after a following MESSAGE_UPDATE has edited the cached Message in place
        # (an edit that adds a mention would then be answered). Here the message is as created.
        if event == "message" and args and isinstance(args[0], discord.Message):
            try:
                self._message_created(args[0])
            except Exception:  # never into discord.py's gateway loop
                log.exception("discord: message %s could not be handled", args[0].id)
        elif event in RAW_EVENTS and args and self._raw is not None:
            try:
                self._raw(event, args[0])
            except Exception:
                log.exception("discord: %s could not be handled", event)
        super().dispatch(event, *args, **kwargs)


class ShardedGatewayClient(GatewayClient, discord.AutoShardedClient):
    """The same client joining the gateway as the given shards of `shard_count`, one session
    per shard. With `shard_count` given, discord.py does not ask GET /gateway/bot."""


def new_client(plan: ShardPlan, **options: Any) -> GatewayClient:
    """A plain client for an unsharded bot (today's one session, no extra requests), else a
    sharded one for exactly the plan's shards."""
    if not plan.sharded:
        return GatewayClient(**options)
    return ShardedGatewayClient(shard_count=plan.count, shard_ids=list(plan.ids), **options)


def gateway_open(client: GatewayClient) -> bool:
    """Whether every session of the client is READY and its WebSocket open."""
    if client.is_closed() or not client.is_ready():
        return False
    if isinstance(client, discord.AutoShardedClient):
        shards = client.shards
        return bool(shards) and not any(shard.is_closed() for shard in shards.values())
    return client.ws is not None and client.ws.open


def ready_within(plan: ShardPlan, timeout: float) -> float:
    """How long READY may take: `timeout`, plus the spacing of the shards' IDENTIFYs."""
    return timeout + IDENTIFY_SPACING * (len(plan.ids) - 1)


class Endpoints:
    """Points discord.py's class-level endpoints at the configured Discord, and back."""

    def __init__(self, settings: DiscordSettings) -> None:
        self.api = settings.api_base_url.rstrip("/")
        self.gateway = settings.gateway_url
        self._saved: tuple[str, yarl.URL] | None = None

    def apply(self) -> None:
        if self._saved is None:
            self._saved = (
                discord.http.Route.BASE,
                discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
            )
        if self.api != DEFAULT_API.rstrip("/"):
            discord.http.Route.BASE = self.api
        if self.gateway != DEFAULT_GATEWAY:
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway)

    def restore(self) -> None:
        if self._saved is not None:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._saved
            self._saved = None


async def log_in(client: GatewayClient, token: str, *, api: str) -> int:
    """Log in over REST; returns the bot's user id. The client is closed on failure."""
    try:
        await client.login(token)
    except discord.LoginFailure:
        await client.close()
        raise AccessRevoked(
            "discord: the token was rejected; copy it again from the developer portal "
            "(your application → Bot → Reset Token) into discord.token"
        ) from None
    except Exception as exc:
        await client.close()
        raise DiscordGatewayError(f"discord: cannot log in at {api}: {_describe(exc)}") from None
    assert client.user is not None  # set by login
    return client.user.id


async def connect_until_ready(client: GatewayClient, *, ready_within: float) -> asyncio.Task[None]:
    """Connect a logged-in client; return the running connection task once READY.

    Raises `discord.PrivilegedIntentsRequired` for close code 4014 (the caller decides what to
    do) and `DiscordGatewayError` for everything else; the client is closed on any failure.
    """
    connection = asyncio.get_running_loop().create_task(client.connect(reconnect=True))
    ready = asyncio.get_running_loop().create_task(client.wait_until_ready())
    done, _ = await asyncio.wait(
        {connection, ready}, timeout=ready_within, return_when=asyncio.FIRST_COMPLETED
    )
    ready.cancel()
    if ready in done and not connection.done():
        return connection
    if not connection.done():
        await client.close()
        await asyncio.wait({connection}, timeout=5)
        raise DiscordGatewayError(f"discord: no READY from the gateway within {ready_within:g}s")
    await client.close()
    error = None if connection.cancelled() else connection.exception()
    if isinstance(error, discord.PrivilegedIntentsRequired):
        raise error
    raise DiscordGatewayError(
        f"discord: the gateway connection failed: {_describe(error) if error else 'closed'}"
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, discord.ConnectionClosed):
        return f"closed with code {exc.code} {exc.reason or ''}".strip()
    return f"{type(exc).__name__}: {exc}"
