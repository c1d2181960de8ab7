"""The Slack side of the sandbox: the emulated workspace with alice in it, and what Slack shows.

Rate limits are Slack's usual tiers, so the bridge meets the budgets it would meet in production.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from adapters.slack.events import PLATFORM, ts_order
from bridge.domain import ChatKey
from sandbox.exchange import Exchange, PlatformCounts, ReplyState, Where
from sandbox.slack_emulator import Change, ShownMessage, SlackEmulator, UploadedFile

GENERAL = "C0GENERAL"
DM = "D0ALICE"
ALICE = "U0ALICE"
BOT_NAME = "chat-bridge"
EDIT_METHODS = ("chat.update", "chat.appendStream")
STOP = "chat_bridge_stop"  # the action_id of the bridge's Stop button


class SlackStage:
    name = "slack"
    bot_name = BOT_NAME

    def __init__(self) -> None:
        self.emu = SlackEmulator(bot_name=BOT_NAME)
        self._threads: dict[str, int] = {}  # "channel/root ts" -> its number, for labels
        self._latest: tuple[str, str] | None = None  # the conversation "thread" continues

    async def start(self) -> None:
        await self.emu.start()
        self.emu.apply_slack_tiers()
        self.emu.add_user(ALICE, "alice", real_name="Alice")

    async def stop(self) -> None:
        await self.emu.stop()

    def bridge_settings(self) -> dict[str, Any]:
        identity = self.emu.identity
        return {
            "enabled": True,
            "mode": "socket",
            "api_base_url": self.emu.api_base_url,
            "bot_token": identity.bot_token,
            "app_token": identity.app_token,
        }

    async def say(self, where: Where, text: str, image: bytes | None = None) -> Exchange:
        sent_at = time.monotonic()
        files = (UploadedFile("screenshot.png", image, "image/png"),) if image else ()
        if where == "thread":
            if self._latest is None:
                raise LookupError("no Slack conversation yet: start one with `slack: TEXT`")
            channel, root = self._latest
            ts = await self.emu.user_message(channel, text, user=ALICE, thread_ts=root, files=files)
        else:
            channel = DM if where == "dm" else GENERAL
            # In a channel the bot answers when named; in its DM everything is for it.
            body = text if where == "dm" else f"<@{self.emu.identity.bot_user_id}> {text}"
            ts = root = await self.emu.user_message(channel, body, user=ALICE, files=files)
            self._latest = (channel, root)
            self._threads[f"{channel}/{root}"] = len(self._threads) + 1
        key = ChatKey(PLATFORM, self.emu.identity.team_id, channel, root)
        return Exchange(self.name, where, text, key, ts, f"{channel}/{root}", sent_at)

    async def press_stop(self, exchange: Exchange) -> None:
        """The Stop button where the reply shows one (posted and edited replies); a native
        stream shows none while it streams, so alice reacts to it with 🛑 instead."""
        channel, root = exchange.place_id.split("/")
        replies = self._replies(channel, root, ts_order(exchange.user_message_id))
        if not replies:
            raise LookupError(f"slack: no reply shows in {self.label(exchange)}")
        latest = replies[-1]
        buttons = [
            element.get("action_id")
            for block in latest.blocks or ()
            if block.get("type") == "actions"
            for element in block.get("elements", ())
        ]
        if STOP in buttons:
            await self.emu.click(ALICE, channel, latest.ts, STOP)
        else:
            await self.emu.react(ALICE, channel, latest.ts, "octagonal_sign")

    def state(self, exchange: Exchange, now: float, after: str | None) -> ReplyState:
        channel, root = exchange.place_id.split("/")
        since = max(ts_order(exchange.user_message_id), ts_order(after or "0.0"))
        replies = self._replies(channel, root, since)
        status = self.emu.status(channel, root)
        return ReplyState(
            indicator=f"{BOT_NAME} {status}" if status else "",
            texts=tuple(message.rendered for message in replies),
            message_ids=tuple(message.ts for message in replies),
        )

    def _replies(self, channel: str, root: str, since: tuple[int, int]) -> list[ShownMessage]:
        bot = self.emu.identity.bot_user_id
        return [
            message
            for message in self.emu.thread(channel, root)
            if message.user == bot
            and message.subtype != "assistant_app_thread"
            and ts_order(message.ts) > since
        ]

    def label(self, exchange: Exchange) -> str:
        return self._place_label(exchange.place_id)

    def _place_label(self, place_id: str) -> str:
        channel = place_id.split("/")[0]
        where = "DM with alice" if channel == DM else "#general"
        return f"{where} › thread {self._threads.get(place_id, '?')}"

    def subscribe(self, on_change: Callable[[], None], on_note: Callable[[str], None]) -> None:
        def changed(change: Change) -> None:
            on_change()
            if change.kind == "title" and change.ts is not None:
                title = self.emu.titles.get((change.channel, change.ts), "")
                where = self._place_label(f"{change.channel}/{change.ts}")
                on_note(f"slack: {where} is now titled “{title}”")

        self.emu.subscribe(changed)

    def counts(self) -> PlatformCounts:
        stats = self.emu.stats
        edits = sum(1 for call in self.emu.calls if call.ok and call.method in EDIT_METHODS)
        return PlatformCounts(dict(stats.calls), edits, sum(stats.rate_limited.values()))
