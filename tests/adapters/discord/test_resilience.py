"""Bursts against a failing database and hostile text: the real discord.py against the emulator,
the real Responder and SqlChatStore, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy.engine import make_url

from adapters.discord import DiscordAdapter
from bridge.domain import MessageStatus, Role
from tests.adapters.discord.conftest import Core, Scene, adapter_for
from tests.outage import FlakyProxy
from tests.test_run import poll


@contextlib.asynccontextmanager
async def running(scene: Scene, core: Core) -> AsyncIterator[DiscordAdapter]:
    adapter = adapter_for(scene, core)
    await adapter.start()
    try:
        yield adapter
    finally:
        await core.responder.stop()
        await adapter.stop()


async def burst(scene: Scene, count: int, text: Callable[[int], str]) -> list[int]:
    """One message in each of `count` new channels, as fast as the gateway takes them."""
    channels = [scene.emu.add_text_channel(scene.guild_id, f"c{n}") for n in range(count)]
    await asyncio.gather(
        *(
            scene.emu.user_message(channel, scene.alice, text(n), mention_bot=True)
            for n, channel in enumerate(channels)
        )
    )
    return channels


def bot_texts(scene: Scene, channel: int) -> list[str]:
    return [m.content for m in scene.emu.messages(channel) if m.author_id == scene.emu.bot_user_id]


async def everything_stored(core: Core, count: int) -> list[Any]:
    chats = []
    for chat_id in range(1, count + 10):
        chats.extend(await core.store.messages(chat_id))
    return chats


@contextlib.asynccontextmanager
async def outage_maker(database_url: str) -> AsyncIterator[tuple[str, Callable[[], Any]]]:
    """(the URL the bridge uses, a function that starts a 5-second outage of it)."""
    if database_url.startswith("sqlite"):
        path = make_url(database_url).database
        assert path is not None

        def hold_the_lock() -> None:
            # Another process holding SQLite's write lock (a backup, a migration, a bulk job).
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("BEGIN EXCLUSIVE")
            threading.Event().wait(5.0)
            conn.execute("COMMIT")
            conn.close()

        yield database_url, lambda: asyncio.get_running_loop().run_in_executor(None, hold_the_lock)
        return
    parsed = make_url(database_url)
    async with FlakyProxy(parsed.host or "127.0.0.1", parsed.port or 5432) as proxy:
        through = parsed.set(host="127.0.0.1", port=proxy.port)
        yield through.render_as_string(hide_password=False), lambda: proxy.cut(5.0)


async def test_a_five_second_database_outage_during_a_burst_of_fifty_loses_nothing(
    database_url: str, scene: Scene, make_core: Callable[..., Any]
) -> None:
    async with outage_maker(database_url) as (url, outage):
        core: Core = await make_core(url=url, outage_tolerance=30.0)
        async with running(scene, core):
            began = asyncio.get_running_loop().time()
            outage_started = outage()
            channels = await burst(scene, 50, lambda n: f"question {n}")
            await poll(
                lambda: all(
                    any(t == f"You said: question {n}" for t in bot_texts(scene, c))
                    for n, c in enumerate(channels)
                ),
                90,
            )
            took = asyncio.get_running_loop().time() - began  # reported, not asserted
            print(f"{database_url.split(':')[0]}: 50 answered {took:.1f}s after the outage began")
            if isinstance(outage_started, asyncio.Future):
                await outage_started
            await poll(lambda: not core.responder._active, 30)
        # Answered once each: one bot message per channel, no notice anywhere.
        assert [bot_texts(scene, c) for c in channels] == [
            [f"You said: question {n}"] for n in range(50)
        ]
        stored = await everything_stored(core, 50)
    users = [m for m in stored if m.role is Role.USER]
    replies = [m for m in stored if m.role is Role.ASSISTANT]
    assert len(users) == 50 and all(m.status is MessageStatus.COMPLETE for m in users)
    assert len(replies) == 50 and all(m.status is MessageStatus.COMPLETE for m in replies)


async def test_one_message_with_nul_and_a_lone_surrogate_among_a_hundred_fails_nothing(
    database_url: str, scene: Scene, make_core: Callable[..., Any]
) -> None:
    core: Core = await make_core(url=database_url)
    bad = 57

    def text(n: int) -> str:
        return "bad \x00 text \ud800 here" if n == bad else f"question {n}"

    async with running(scene, core):
        channels = await burst(scene, 100, text)

        def answered(n: int, channel: int) -> bool:
            # NUL removed (its spaces folded, as the prompt text always is), surrogate replaced.
            wanted = "You said: bad text \ufffd here" if n == bad else f"You said: question {n}"
            return bot_texts(scene, channel) == [wanted]

        await poll(lambda: all(answered(n, c) for n, c in enumerate(channels)), 90)
        await poll(lambda: not core.responder._active, 30)
        stored = await everything_stored(core, 100)
    users = [m for m in stored if m.role is Role.USER]
    assert len(users) == 100 and all(m.status is MessageStatus.COMPLETE for m in users)
    assert "bad text \ufffd here" in [m.content for m in users]
    replies = [m for m in stored if m.role is Role.ASSISTANT]
    assert len(replies) == 100 and all(m.status is MessageStatus.COMPLETE for m in replies)
