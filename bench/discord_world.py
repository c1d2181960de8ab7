"""The Discord emulator set up for a scenario: guilds of text channels, one user, and a recorder
of every message the bot posts or edits (through the world's change feed, as the channel shows it).
"""

from __future__ import annotations

from bench.records import PlatformCall, VisibleWrite
from bench.reply_text import prompt
from bench.scenarios import Scenario
from sandbox.discord_emulator import DiscordEmulator
from sandbox.discord_emulator.records import Change

TOKEN = "bench-discord-token"
# Discord caps a guild at 500 channels.
CHANNELS_PER_GUILD = 500


class DiscordWorld:
    platform = "discord"

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        # Discord's own limits: 5 creates and 5 edits per 5 s per channel, 50 requests/s global.
        self.emu = DiscordEmulator(token=TOKEN, bot_name="bench-bot")
        self.writes: list[VisibleWrite] = []
        self.places: dict[str, int] = {}
        self._channels: list[int] = []
        self._user = 0

    def clock(self) -> float:
        return self.emu.clock()

    async def start(self) -> None:
        await self.emu.start()
        emu = self.emu
        guild = 0
        for index in range(self.scenario.conversations):
            if index % CHANNELS_PER_GUILD == 0:
                guild = emu.add_guild(f"bench {index // CHANNELS_PER_GUILD}")
            channel = emu.add_text_channel(guild, f"bench-{index}")
            self._channels.append(channel)
            self.places[str(channel)] = index
        self._user = emu.add_user("alice")
        emu.world.subscribe(self._record)

    async def stop(self) -> None:
        await self.emu.stop()

    def _record(self, change: Change) -> None:
        message = change.message
        if message is None or message.author_id != self.emu.bot_user_id:
            return
        if change.kind not in ("posted", "edited"):
            return
        self.writes.append(
            VisibleWrite(
                at=self.emu.clock(),
                place=str(change.channel_id),
                message_id=str(message.id),
                text=message.content,
                posted=change.kind == "posted",
            )
        )

    def bridge_section(self) -> str:
        return (
            "[discord]\nenabled = true\n"
            f'api_base_url = "{self.emu.api_base_url}"\ngateway_url = "{self.emu.gateway_url}"\n'
        )

    def bridge_env(self) -> dict[str, str]:
        return {"CHAT_BRIDGE_DISCORD__TOKEN": TOKEN}

    def seed_args(self) -> list[str]:
        return ["discord", "--api-base", self.emu.api_base_url, "--gateway", self.emu.gateway_url]

    def seed_env(self) -> dict[str, str]:
        return {"SEED_DISCORD_TOKEN": TOKEN}

    async def wait_connected(self) -> None:
        # Both bots say they are ready only after READY, so this is a check, not a wait.
        if not self.emu.stats.identifies:
            raise RuntimeError("the bot says it is ready but never identified on the gateway")

    async def send(self, conversation: int) -> float:
        at = self.emu.clock()
        channel = self._channels[conversation]
        await self.emu.user_message(channel, self._user, prompt(conversation), mention_bot=True)
        return at

    def calls(self, since: float) -> list[PlatformCall]:
        return [
            PlatformCall(r.time, r.route or f"{r.method} {r.path}", r.status)
            for r in self.emu.requests
            if r.time >= since
        ]
