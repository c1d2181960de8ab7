"""The Slack emulator set up for a scenario: one workspace with Slack's rate tiers, top-level
mentions that each start a thread, and a recorder of what every bot reply in a thread shows.
"""

from __future__ import annotations

from bench.records import PlatformCall, VisibleWrite
from bench.reply_text import prompt
from bench.scenarios import Scenario
from sandbox.slack_emulator import Change, SlackEmulator
from sandbox.slack_emulator.rendering import show

BOT_TOKEN = "xoxb-bench-token"
APP_TOKEN = "xapp-bench-token"
BOT_USER = "U0BOT"


class SlackWorld:
    platform = "slack"

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.emu = SlackEmulator(bot_token=BOT_TOKEN, app_token=APP_TOKEN, bot_user_id=BOT_USER)
        self.writes: list[VisibleWrite] = []
        self.places: dict[str, int] = {}

    def clock(self) -> float:
        return self.emu.clock()

    def channel_of(self, conversation: int) -> str:
        spread = self.scenario.slack_channels or self.scenario.conversations
        return f"C0BENCH{conversation % spread:04d}"

    async def start(self) -> None:
        await self.emu.start()
        # Every method limited as in a real workspace: chat.update 50/min shared by the whole
        # workspace, chat.postMessage one a second per channel after a short burst, chat.stopStream
        # 20/min...
        self.emu.apply_slack_tiers()
        if self.scenario.post_limit == "strict":
            self.emu.limit_posts(burst=1)
        self.emu.subscribe(self._record)

    async def stop(self) -> None:
        await self.emu.stop()

    def _record(self, change: Change) -> None:
        message = change.message
        if change.kind not in ("posted", "updated") or message is None:
            return
        if message.user != BOT_USER or not message.thread_ts or message.thread_ts == message.ts:
            return
        self.writes.append(
            VisibleWrite(
                at=self.emu.clock(),
                place=f"{message.channel}/{message.thread_ts}",
                message_id=message.ts,
                text=show(message, self.emu.users).rendered,
                posted=change.kind == "posted",
            )
        )

    def bridge_section(self) -> str:
        return (
            '[slack]\nenabled = true\nmode = "socket"\n'
            f'api_base_url = "{self.emu.api_base_url}"\n'
            f'native_streaming = "{self.scenario.native_streaming}"\n'
        )

    def bridge_env(self) -> dict[str, str]:
        return {
            "CHAT_BRIDGE_SLACK__BOT_TOKEN": BOT_TOKEN,
            "CHAT_BRIDGE_SLACK__APP_TOKEN": APP_TOKEN,
        }

    def seed_args(self) -> list[str]:
        return ["slack", "--api-base", self.emu.api_base_url]

    def seed_env(self) -> dict[str, str]:
        return {"SEED_SLACK_BOT_TOKEN": BOT_TOKEN, "SEED_SLACK_APP_TOKEN": APP_TOKEN}

    async def wait_connected(self) -> None:
        # The caller bounds the wait; the emulator's own bound is only a backstop.
        await self.emu.wait_for_socket(1, timeout=3600)

    async def send(self, conversation: int) -> float:
        at = self.emu.clock()
        channel = self.channel_of(conversation)
        text = f"<@{BOT_USER}> {prompt(conversation)}"
        ts = await self.emu.user_message(channel, text, user="U0ALICE")
        self.places[f"{channel}/{ts}"] = conversation
        return at

    def identity_calls(self) -> int:
        """auth.test calls since the emulator started: the bridge's start included."""
        return self.emu.call_counts["auth.test"]

    def calls(self, since: float) -> list[PlatformCall]:
        calls = self.emu.calls
        return [PlatformCall(c.at, c.method, c.http_status) for c in calls if c.at >= since]
