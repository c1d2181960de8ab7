"""The scripted conversation the sandbox plays on each platform, and how a platform plays it.

Every step waits for the previous reply to finish, as a person would; the two platforms play at
the same time, so their replies stream side by side.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sandbox.exchange import Exchange, Stage, Where
from sandbox.tracker import Tracker


@dataclass(frozen=True, slots=True)
class Step:
    where: Where
    text: str


def conversation(platform: str) -> tuple[Step, ...]:
    """A mention, two follow-ups in its thread (the second asks for code), then a DM."""
    name = "Discord" if platform == "discord" else "Slack"
    return (
        Step("channel", "What is chat-bridge, in two sentences?"),
        Step("thread", f"How do you stay under {name}'s rate limits?"),
        Step("thread", "Show me a Python example: retry an API call with exponential backoff."),
        Step("dm", "Can you keep a secret? We need a name for our team's bot."),
    )


# Each platform's replies land in this many conversations (a thread and a DM each).
CONVERSATIONS_PER_PLATFORM = 2


class ScriptFailed(Exception):
    """A reply of the script did not complete."""


async def play(
    tracker: Tracker,
    stage: Stage,
    steps: tuple[Step, ...],
    *,
    pause: float,
    timeout: float,  # noqa: ASYNC109 (per reply, reported with the reply that was late)
) -> list[Exchange]:
    """Say each step as alice, wait for the bot's reply, pause as if reading it, go on."""
    played = []
    for step in steps:
        exchange = await tracker.say(stage, step.where, step.text)
        await tracker.wait(exchange, timeout)
        if exchange.status != "complete":
            raise ScriptFailed(
                f"{stage.name}: the reply to “{step.text}” ended {exchange.status}: "
                f"{exchange.error or 'no reason given'}"
            )
        played.append(exchange)
        await asyncio.sleep(pause)
    return played
