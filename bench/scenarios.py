"""The platform benchmark scenarios and the targets the bridge is checked against.

A scenario is one burst of user messages (all sent at once) on one emulated platform. Replies in
one Discord channel come from `llm.n` choices of a single message, because a channel is one Chat
whose messages are answered one at a time, in order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

Platform = Literal["discord", "slack"]


@dataclass(frozen=True, slots=True)
class Target:
    """A bound on one figure of the bridge; `popular` is what popular bots were measured at."""

    metric: str
    limit: float
    popular: str
    label: str


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    platform: Platform
    description: str
    conversations: int = 1
    n: int = 1  # choices per message (llm.n): concurrent replies in one conversation
    tokens: int = 600
    rate: float = 50.0  # tokens per second per reply
    edit_interval: float = 1.0
    native_streaming: Literal["auto", "never"] = "auto"  # Slack only
    slack_channels: int = 0  # Slack: channels the threads are spread over (0: one per thread)
    # Slack: chat.postMessage per channel in the emulator: Slack's short burst, then one a second
    # ("burst"), or strictly one a second, a 429 for anything closer ("strict").
    post_limit: Literal["burst", "strict"] = "burst"
    # The seed cannot finish some scenarios in any reasonable time (it edits once per delta at
    # the platform's pace); it is stopped this long after the streams should have ended.
    seed_grace: float = 150.0
    targets: tuple[Target, ...] = ()

    @property
    def replies(self) -> int:
        return self.conversations * self.n

    @property
    def stream_seconds(self) -> float:
        return (self.tokens - 1) / self.rate

    def with_pace(self, tokens: int | None, rate: float | None, interval: float | None) -> Scenario:
        """The same scenario at another pace (the smoke test runs a short, fast one)."""
        return dataclasses.replace(
            self,
            tokens=tokens or self.tokens,
            rate=rate or self.rate,
            edit_interval=interval or self.edit_interval,
        )


_SLACK_TARGETS = (
    Target("first_text_max_s", 0.5, "38 s", "user message to first text, slowest reply"),
    Target("rate_limited", 0, "-", "429s received"),
    Target("cpu_replies_s", 1.3, "6.6 to 9.1 s", "bridge CPU for the replies"),
    Target("peak_rss_mb", 120, "95 MB", "bridge peak RSS"),
)

_CHANNEL_TARGETS = (
    Target("first_text_p50_s", 0.5, "-", "user message to first text, median"),
    Target("first_text_max_s", 2.0, "-", "user message to first text, slowest reply"),
    Target("replies_incomplete", 0, "-", "replies not complete and exact"),
    Target("auth_test_calls", 1, "-", "auth.test calls, the start included"),
)

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        # The seed edits once per delta at the channel's 1 edit/s: 600 s a reply; let it finish.
        Scenario(
            "discord-1", "discord", "one conversation in one Discord channel", seed_grace=700.0
        ),
        Scenario(
            "slack-1",
            "slack",
            "one Slack thread, native streaming where allowed (realistic tiers)",
        ),
        Scenario(
            "slack-1-edits",
            "slack",
            "one Slack thread, chat.update only (realistic tiers)",
            native_streaming="never",
        ),
        Scenario(
            "discord-20",
            "discord",
            "20 concurrent replies in 20 Discord channels",
            conversations=20,
            seed_grace=700.0,
            targets=(
                Target("gap_max_s", 1.3, "7.2 s", "longest gap between visible updates"),
                Target("first_text_max_s", 0.5, "1.5 s", "user message to first text"),
            ),
        ),
        Scenario(
            "discord-n5",
            "discord",
            "5 concurrent replies in one Discord channel (llm.n = 5; bucket 5 writes / 5 s)",
            n=5,
            targets=(
                Target("final_lag_max_s", 5.0, "9.2 s", "last delta to final text, last reply"),
                Target("final_lag_mean_s", 3.0, "7.4 s", "last delta to final text, mean"),
                Target("stall_max_s", 10.0, "-", "longest stretch without growth (2 windows)"),
            ),
        ),
        Scenario(
            "discord-n20",
            "discord",
            "20 concurrent replies in one Discord channel (llm.n = 20)",
            n=20,
        ),
        Scenario(
            "slack-20-native",
            "slack",
            "20 concurrent threads in one Slack workspace, native streaming (realistic tiers)",
            conversations=20,
            targets=(
                *_SLACK_TARGETS,
                Target("max_60s.chat.appendStream", 100, "-", "chat.appendStream in any 60 s"),
            ),
        ),
        Scenario(
            "slack-20-edits",
            "slack",
            "20 concurrent threads in one Slack workspace, chat.update only (realistic tiers)",
            conversations=20,
            native_streaming="never",
            targets=(
                *_SLACK_TARGETS,
                Target("max_60s.chat.update", 50, "~740 / min", "chat.update in any 60 s"),
            ),
        ),
        # Twenty people mention the bot at the same moment, each in a new thread of one channel.
        Scenario(
            "slack-channel-20",
            "slack",
            "20 new threads in one Slack channel at once, native streaming (Slack's post burst)",
            conversations=20,
            slack_channels=1,
            targets=_CHANNEL_TARGETS,
        ),
        Scenario(
            "slack-channel-20-edits",
            "slack",
            "20 new threads in one Slack channel at once, chat.update only (Slack's post burst)",
            conversations=20,
            slack_channels=1,
            native_streaming="never",
            targets=_CHANNEL_TARGETS,
        ),
        Scenario(
            "slack-channel-20-strict",
            "slack",
            "20 new threads in one Slack channel at once, chat.update only, strictly 1 post/s",
            conversations=20,
            slack_channels=1,
            native_streaming="never",
            post_limit="strict",
            targets=(Target("replies_incomplete", 0, "-", "replies not complete and exact"),),
        ),
        Scenario(
            "slack-50-native",
            "slack",
            "50 concurrent threads in one Slack workspace, native streaming (realistic tiers)",
            conversations=50,
            seed_grace=300.0,
        ),
        Scenario(
            "slack-50-edits",
            "slack",
            "50 concurrent threads in one Slack workspace, chat.update only (realistic tiers)",
            conversations=50,
            native_streaming="never",
            seed_grace=300.0,
        ),
        Scenario(
            "discord-100",
            "discord",
            "100 concurrent conversations in 100 Discord channels",
            conversations=100,
        ),
        Scenario(
            "discord-1000",
            "discord",
            "1,000 concurrent conversations in 1,000 Discord channels (2 guilds), 20 tokens/s",
            conversations=1000,
            rate=20.0,
            seed_grace=60.0,
        ),
    )
}
