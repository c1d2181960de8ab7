"""The Discord side of the sandbox: a server with #general, alice, her DM, and what Discord shows.

The bridge runs with `auto_thread`, so a mention in #general gets its answer in a new thread that
takes the message's id; follow-ups in that thread need no mention.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from adapters.discord.events import chat_key
from sandbox.discord_emulator import Change, DiscordEmulator, FileUpload
from sandbox.exchange import Exchange, PlatformCounts, ReplyState, Where

TOKEN = "sandbox-discord-token"
BOT_NAME = "chat-bridge"
EDIT_ROUTE = "PATCH /channels/{channel_id}/messages/{message_id}"
TYPING_SHOWS_FOR = 10.0  # seconds, unless the typer posts a message first
STOP = "chat-bridge:stop"  # the custom_id of the bridge's Stop button


class DiscordStage:
    name = "discord"
    bot_name = BOT_NAME

    def __init__(self) -> None:
        self.emu = DiscordEmulator(token=TOKEN, bot_name=BOT_NAME)
        self.guild_id = self.general_id = self.alice_id = self.dm_id = 0
        self._latest: int | None = None  # the thread or DM that "thread" continues
        self._thread_names: dict[int, str] = {}

    async def start(self) -> None:
        emu = self.emu
        await emu.start()
        self.guild_id = emu.add_guild("Sandbox")
        self.general_id = emu.add_text_channel(self.guild_id, "general")
        self.alice_id = emu.add_user("alice")
        self.dm_id = emu.dm_channel(self.alice_id)

    async def stop(self) -> None:
        await self.emu.stop()

    def bridge_settings(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "token": TOKEN,
            "api_base_url": self.emu.api_base_url,
            "gateway_url": self.emu.gateway_url,
            "auto_thread": True,
            # The emulator sends every guild right after READY; no need to wait for stragglers.
            "guild_ready_timeout": 0.1,
        }

    async def say(self, where: Where, text: str, image: bytes | None = None) -> Exchange:
        sent_at = time.monotonic()
        emu = self.emu
        files = (FileUpload("screenshot.png", image, "image/png"),) if image else ()
        if where == "channel":
            message_id = await emu.user_message(
                self.general_id, self.alice_id, text, True, attachments=files
            )
            place = message_id  # the thread the bot opens from the message takes its id
        else:
            if where == "dm":
                place = self.dm_id
            elif self._latest is None:
                raise LookupError("no Discord conversation yet: start one with `discord: TEXT`")
            else:
                place = self._latest
            message_id = await emu.user_message(place, self.alice_id, text, attachments=files)
        self._latest = place
        key = chat_key(None if place == self.dm_id else self.guild_id, place)
        return Exchange(self.name, where, text, key, str(message_id), str(place), sent_at)

    async def press_stop(self, exchange: Exchange) -> None:
        place = int(exchange.place_id)
        bot = self.emu.bot_user_id
        for message in reversed(self.emu.messages(place)):
            if message.author_id == bot and STOP in message.custom_ids():
                await self.emu.click(place, message.id, self.alice_id, STOP)
                return
        raise LookupError(f"discord: no Stop button shows in {self.label(exchange)}")

    def state(self, exchange: Exchange, now: float, after: str | None) -> ReplyState:
        place = int(exchange.place_id)
        since = max(int(exchange.user_message_id), int(after or 0))
        bot = self.emu.bot_user_id
        replies = [m for m in self.emu.messages(place) if m.author_id == bot and m.id > since]
        typed = [t.time for t in self.emu.typing_events if t.channel_id == place]
        last_typed = max(typed, default=None)
        last_post = max((m.created_at for m in replies), default=None)
        # Discord shows "is typing…" for ten seconds, or until the typer's next message.
        typing = (
            last_typed is not None
            and last_typed >= exchange.sent_at
            and now - last_typed < TYPING_SHOWS_FOR
            and (last_post is None or last_typed > last_post)
        )
        return ReplyState(
            indicator=f"{BOT_NAME} is typing…" if typing else "",
            texts=tuple(m.content for m in replies),
            message_ids=tuple(str(m.id) for m in replies),
        )

    def label(self, exchange: Exchange) -> str:
        return self._place_label(int(exchange.place_id))

    def _place_label(self, place: int) -> str:
        if place == self.dm_id:
            return "DM with alice"
        channel = self.emu.world.channels.get(place)
        if channel is None or not channel.is_thread:
            return "#general"
        return f"#general › “{channel.name}”"

    def subscribe(self, on_change: Callable[[], None], on_note: Callable[[str], None]) -> None:
        def changed(change: Change) -> None:
            on_change()
            if change.kind != "thread":
                return
            channel = self.emu.world.channels[change.channel_id]
            name = channel.name or ""
            before = self._thread_names.get(channel.id)
            self._thread_names[channel.id] = name
            if before is None:
                on_note(f"discord: {BOT_NAME} opened the thread “{name}” in #general")
            elif before != name:
                on_note(f"discord: thread “{before}” renamed to “{name}”")

        self.emu.subscribe(changed)

    def counts(self) -> PlatformCounts:
        stats = self.emu.stats
        edits = sum(1 for r in self.emu.requests if r.route == EDIT_ROUTE and r.status == 200)
        return PlatformCounts(dict(stats.requests), edits, stats.rate_limited)
