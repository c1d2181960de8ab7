"""The soak's two platforms and its users: the Slack and Discord emulators set up as a workspace and
a guild, a steady stream of mentions alternating between them, and what each mention got back.

Every mention carries its own number, which the LLM server turns into a reply of its own
(`bench.reply_text`), so each bot message is matched to the mention it answers (a Slack thread,
a Discord message reference) and its final text compared with what the model sent.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.reply_text import prompt, reply_text
from sandbox.discord_emulator import DiscordEmulator
from sandbox.discord_emulator.records import Change as DiscordChange
from sandbox.slack_emulator import SlackEmulator
from sandbox.slack_emulator.model import Change as SlackChange
from sandbox.slack_emulator.rendering import show

SLACK_BOT_TOKEN = "xoxb-soak-token"
SLACK_APP_TOKEN = "xapp-soak-token"
SLACK_BOT = "U0BOT"
DISCORD_TOKEN = "soak-discord-token"
# Half the Slack threads stream natively (chat.startStream/appendStream/stopStream: the stream
# that can expire mid-reply), half are posted and edited (chat.postMessage + chat.update). One
# path alone would need more than its Slack tier at a message every 2 s: chat.stopStream is
# about 20 a minute, chat.update about 50, and a reply takes at least one stop or two updates.
SLACK_NATIVE = ("C0SOAKN0", "C0SOAKN1")
SLACK_EDITED = ("C0SOAKE0", "C0SOAKE1")
SLACK_USERS = ("U0ALICE", "U0BOB", "U0CAROL", "U0DAVE")
DISCORD_CHANNELS = 10
DISCORD_USERS = ("alice", "bob", "carol", "dave")
NOTICES = {
    # notices.* of the bridge's defaults, by a phrase each renders with on both platforms
    "interrupted": "restarted while writing it",
    "ask_again": "restarted before it could answer",
    "failed": "Reply interrupted:",
    "cut": "Reply cut",
}
_MARKS = re.compile(r"[…▌\s]+")
_WORDS = re.compile(r"\w+")


@dataclass
class Asked:
    """One mention and what the platform showed in answer to it."""

    key: int
    platform: str
    place: str  # Slack channel, Discord channel id
    sent: float  # seconds since the soak's zero
    platform_id: str = ""  # Slack ts, Discord message id
    first_text: float | None = None
    last_change: float | None = None
    bot_messages: dict[str, float] = field(default_factory=dict)  # message id -> first seen
    settled: str | None = None  # the outcome once final (see `outcome`)


def notice_kind(text: str) -> str | None:
    for kind, phrase in NOTICES.items():
        if phrase in text:
            return kind
    return None


def shows_text(text: str) -> bool:
    """More than a placeholder or a cursor."""
    return bool(_MARKS.sub("", text))


def same_words(shown: str, expected: str) -> bool:
    """The final text is the model's: the same words in the same order (formatting aside: Slack
    renders Markdown its own way)."""
    return _WORDS.findall(shown) == _WORDS.findall(expected)


def outcome(texts: list[str], streaming: bool, expected: str) -> str | None:
    """`complete`, `notice:<kind>`, `duplicate`, `mismatch`; None while it may still change."""
    if not texts:
        return None
    if len(texts) > 1:
        return "duplicate"
    text = texts[0]
    kind = notice_kind(text)
    if kind is not None and not streaming:
        return f"notice:{kind}"
    if streaming or "▌" in text:
        return None
    if same_words(text, expected):
        return "complete"
    return None  # not final yet (or, if it stays so, a mismatch: see World.final_outcomes)


class World:
    def __init__(self, clock: Callable[[], float], tokens: int) -> None:
        self.now = clock
        self.tokens = tokens
        self.slack = SlackEmulator(
            bot_token=SLACK_BOT_TOKEN, app_token=SLACK_APP_TOKEN, bot_user_id=SLACK_BOT
        )
        self.discord = DiscordEmulator(token=DISCORD_TOKEN, bot_name="soak-bot")
        self.asked: list[Asked] = []
        self._slack_threads: dict[tuple[str, str], Asked] = {}
        self._discord_messages: dict[int, Asked] = {}
        self.streaming_slack: dict[tuple[str, str], float] = {}  # native streams open now
        self._discord_channels: list[int] = []
        self._discord_users: list[int] = []
        self._turn = 0
        self.send_errors: list[str] = []
        # Bot messages seen before their mention was registered (its send had not returned).
        self._early: dict[tuple[str, str], list[tuple[str, Callable[[], str]]]] = {}

    # --- set-up --------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.slack.start()
        # Slack's tiers per method and workspace, as for a real app, except opening a Socket
        # Mode connection (Tier 1, about one a minute): three instances and their replacements
        # connecting within a minute would wait for it; not what the soak is about.
        self.slack.apply_slack_tiers()
        self.slack.rate_limit("apps.connections.open", None)
        for n, user in enumerate(SLACK_USERS):
            self.slack.add_user(user, f"user{n}")
        self.slack.subscribe(self._on_slack)
        await self.discord.start()
        guild = self.discord.add_guild("soak")
        self._discord_channels = [
            self.discord.add_text_channel(guild, f"soak-{n}") for n in range(DISCORD_CHANNELS)
        ]
        self._discord_users = [self.discord.add_user(name) for name in DISCORD_USERS]
        self.discord.subscribe(self._on_discord)

    async def stop(self) -> None:
        await self.discord.stop()
        await self.slack.stop()

    def slack_section(self) -> str:
        return (
            f'mode = "socket"\napi_base_url = "{self.slack.api_base_url}"\n'
            'native_streaming = "auto"\n'
        )

    def discord_section(self) -> str:
        return (
            f'api_base_url = "{self.discord.api_base_url}"\n'
            f'gateway_url = "{self.discord.gateway_url}"\n'
        )

    @staticmethod
    def overrides() -> str:
        return "".join(
            f'[[overrides]]\nchannel = "{c}"\nnative_streaming = "never"\n\n' for c in SLACK_EDITED
        )

    @staticmethod
    def env() -> dict[str, str]:
        return {
            "CHAT_BRIDGE_SLACK__BOT_TOKEN": SLACK_BOT_TOKEN,
            "CHAT_BRIDGE_SLACK__APP_TOKEN": SLACK_APP_TOKEN,
            "CHAT_BRIDGE_DISCORD__TOKEN": DISCORD_TOKEN,
        }

    # --- the users -----------------------------------------------------------------------------

    async def send(self, platform: str) -> Asked:
        """One mention on `platform`, in the next Slack channel (a new thread) or Discord
        channel, by the next user."""
        turn = self._turn
        self._turn += 1
        key = len(self.asked)
        if platform == "slack":
            channels = SLACK_NATIVE + SLACK_EDITED
            channel = channels[turn // 2 % len(channels)]
            asked = Asked(key, "slack", channel, self.now())
            self.asked.append(asked)
            user = SLACK_USERS[turn // 2 % len(SLACK_USERS)]
            try:
                ts = await self.slack.user_message(channel, f"<@{SLACK_BOT}> {prompt(key)}", user)
            except Exception as exc:  # counted, not fatal: the soak goes on
                self.send_errors.append(f"slack: {exc!r}")
                return asked
            asked.platform_id = ts
            self._slack_threads[(channel, ts)] = asked
            self._catch_up(asked, ("slack", f"{channel}/{ts}"))
        else:
            channel_id = self._discord_channels[turn // 2 % len(self._discord_channels)]
            author = self._discord_users[turn // 2 % len(self._discord_users)]
            asked = Asked(key, "discord", str(channel_id), self.now())
            self.asked.append(asked)
            try:
                message_id = await self.discord.user_message(
                    channel_id, author, prompt(key), mention_bot=True
                )
            except Exception as exc:
                self.send_errors.append(f"discord: {exc!r}")
                return asked
            asked.platform_id = str(message_id)
            self._discord_messages[message_id] = asked
            self._catch_up(asked, ("discord", str(message_id)))
        return asked

    def _catch_up(self, asked: Asked, early_key: tuple[str, str]) -> None:
        for message_id, text in self._early.pop(early_key, []):
            self._seen(asked, message_id, text)

    # --- what the platforms show ---------------------------------------------------------------

    def _on_slack(self, change: SlackChange) -> None:
        message = change.message
        if message is None or not message.bot_id or not message.thread_ts:
            return
        if message.ts == message.thread_ts:
            return
        place = (message.channel, message.ts)
        if message.streaming:
            self.streaming_slack.setdefault(place, self.now())
        else:
            self.streaming_slack.pop(place, None)
        shown = show(message, self.slack.users).rendered
        asked = self._slack_threads.get((message.channel, message.thread_ts))
        if asked is None:
            early = self._early.setdefault(("slack", f"{message.channel}/{message.thread_ts}"), [])
            early.append((message.ts, lambda: shown))
            return
        self._seen(asked, message.ts, lambda: shown)

    def _on_discord(self, change: DiscordChange) -> None:
        message = change.message
        if message is None or message.author_id != self.discord.bot_user_id:
            return
        if change.kind not in ("posted", "edited"):
            return
        reference = message.message_reference or {}
        source = int(reference.get("message_id") or 0)
        asked = self._discord_messages.get(source)
        content = message.content
        if asked is None:
            if source:
                early = self._early.setdefault(("discord", str(source)), [])
                early.append((str(message.id), lambda: content))
            return
        self._seen(asked, str(message.id), lambda: content)

    def _seen(self, asked: Asked, message_id: str, text: Callable[[], str]) -> None:
        now = self.now()
        asked.bot_messages.setdefault(message_id, now)
        asked.last_change = now
        if asked.first_text is None:
            shown = text()
            if shows_text(shown) and notice_kind(shown) is None:
                asked.first_text = now

    def replies_to(self, asked: Asked) -> tuple[list[str], bool]:
        """The texts of the bot messages answering `asked` now, and whether one still streams."""
        if asked.platform == "slack":
            thread = self.slack.thread(asked.place, asked.platform_id)
            bot = [m for m in thread if m.bot_id and m.ts != asked.platform_id]
            return [m.rendered for m in bot], any(m.is_streaming for m in bot)
        texts = []
        for message_id in asked.bot_messages:
            shown = self.discord.message(int(message_id))
            if shown is not None:
                texts.append(shown.content)
        return texts, False

    def expected(self, asked: Asked) -> str:
        return reply_text(asked.key, 0, self.tokens)

    def settle(self) -> int:
        """Mark what reached its final state; returns how many are still open."""
        open_ = 0
        for asked in self.asked:
            if asked.settled is None:
                texts, streaming = self.replies_to(asked)
                asked.settled = outcome(texts, streaming, self.expected(asked))
            if asked.settled is None:
                open_ += 1
        return open_

    def final_outcomes(self) -> dict[int, str]:
        """Every mention's outcome at the end: what `outcome` says, else `lost` (nothing came),
        `stuck` (a reply that never ended) or `mismatch` (ended with other text, no notice)."""
        found: dict[int, str] = {}
        for asked in self.asked:
            texts, streaming = self.replies_to(asked)
            result = outcome(texts, streaming, self.expected(asked))
            if result is None:
                if not texts or not any(shows_text(t) for t in texts):
                    result = "lost" if not texts else "stuck"
                elif streaming or any("▌" in t for t in texts):
                    result = "stuck"
                else:
                    result = "mismatch"
            found[asked.key] = result
        return found

    def dump(self, workdir: Path, zero: float) -> None:
        """Every platform call as the emulators answered it, on the soak's clock, for looking into
        a surprising figure: `platform-calls.jsonl` in the work directory."""
        with (workdir / "platform-calls.jsonl").open("w") as out:
            for call in self.slack.calls:
                channel = call.args.get("channel") or call.args.get("channel_id")
                row = ["slack", round(call.at - zero, 3), call.method, call.http_status, channel,
                       call.response.get("error")]  # fmt: skip
                out.write(json.dumps(row) + "\n")
            for request in self.discord.requests:
                row = ["discord", round(request.time - zero, 3), request.route, request.status,
                       request.major, None]  # fmt: skip
                out.write(json.dumps(row) + "\n")

    def rate_limited(self) -> dict[str, dict[str, int]]:
        return {
            "slack": dict(self.slack.stats.rate_limited),
            "discord": dict(self.discord.stats.rate_limited_by_route),
        }

    def platform_stats(self) -> dict[str, Any]:
        slack = self.slack.stats
        discord = self.discord.stats
        return {
            "slack": {
                "events_delivered": slack.events_delivered,
                "event_retries": slack.retries,
                "events_dropped": slack.events_dropped,
                "socket_connects": slack.socket_connects,
                "calls": sum(slack.calls.values()),
            },
            "discord": {
                "identifies": discord.identifies,
                "resumes": discord.resumes,
                "replayed": discord.replayed,
                "requests": sum(discord.requests.values()),
                "violations": discord.violations,
            },
        }


def wall_of(monotonic_since_zero: float, zero: float) -> float:
    """A soak time as time.time(), for comparing with log stamps."""
    return time.time() - (time.monotonic() - zero) + monotonic_since_zero
