"""Runs a real discord.py Client against the Discord emulator and records what it dispatches.

Points discord.py's class-level endpoints at the emulator only while a bot runs, then restores them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import discord
import discord.gateway
import discord.http
import yarl

from sandbox.discord_emulator import DiscordEmulator

Predicate = Callable[..., bool]
# How long a test waits for something the bot or the emulator should do; every step takes
# milliseconds, so reaching this means it is not going to happen.
WAIT_LIMIT = 10.0  # generous: the machines running the suite are shared


@contextlib.contextmanager
def discord_pointed_at(emu: DiscordEmulator) -> Iterator[None]:
    route_base = discord.http.Route.BASE
    gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = emu.api_base_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(emu.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = route_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway


class RecordingClient(discord.Client):
    """A plain discord.Client that also keeps every event it dispatches, for tests to await."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        self._changed = asyncio.Event()

    def dispatch(self, event: str, /, *args: Any, **kwargs: Any) -> None:
        self.events.append((event, args))
        self._changed.set()
        super().dispatch(event, *args, **kwargs)

    def seen(self, name: str, predicate: Predicate | None = None) -> list[tuple[Any, ...]]:
        return [a for e, a in self.events if e == name and (predicate is None or predicate(*a))]

    async def next_event(self, name: str, predicate: Predicate | None = None) -> tuple[Any, ...]:
        """The first recorded event `name` matching `predicate`, waiting for it if need be."""

        async def scan() -> tuple[Any, ...]:
            checked = 0
            while True:
                for event, args in self.events[checked:]:
                    if event == name and (predicate is None or predicate(*args)):
                        return args
                checked = len(self.events)
                self._changed.clear()
                await self._changed.wait()

        async with asyncio.timeout(WAIT_LIMIT):
            return await scan()


def bot_intents(*, message_content: bool = True) -> discord.Intents:
    intents = discord.Intents.default()
    intents.message_content = message_content
    return intents


@contextlib.asynccontextmanager
async def running_bot(
    emu: DiscordEmulator,
    *,
    intents: discord.Intents | None = None,
    before_connect: Callable[[RecordingClient], None] | None = None,
) -> AsyncIterator[RecordingClient]:
    """Logs a bot in, connects it, waits for on_ready, and closes it afterwards."""
    with discord_pointed_at(emu):
        # A short guild_ready_timeout: the emulator sends every GUILD_CREATE right after READY.
        client = RecordingClient(intents=intents or bot_intents(), guild_ready_timeout=0.05)
        if before_connect is not None:
            before_connect(client)
        await client.login(emu.token)
        connection = asyncio.create_task(client.connect())
        ready = asyncio.create_task(client.next_event("ready"))
        try:
            done, _ = await asyncio.wait({connection, ready}, return_when=asyncio.FIRST_COMPLETED)
            if connection in done:
                connection.result()  # raises what made the connection fail
                raise AssertionError("the client stopped before on_ready")
            ready.result()
            yield client
        finally:
            ready.cancel()
            await client.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(connection, 5.0)


async def wait_until(condition: Callable[[], Any]) -> Any:
    """Polls emulator-side state until `condition()` is truthy; returns its value."""
    deadline = time.monotonic() + WAIT_LIMIT
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)
