"""The scripted conversation the sandbox plays on each platform, and how a platform plays it.

Every step waits for the previous reply to finish, as a person would; the two platforms play at
the same time, so their replies stream side by side.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sandbox.exchange import Exchange, Stage, Where
from sandbox.screenshot import screenshot_png
from sandbox.tracker import Tracker


@dataclass(frozen=True, slots=True)
class Step:
    where: Where
    text: str
    image: bool = False  # attach a screenshot (a PNG of a traceback)
    stop_after: float = 0.0  # press Stop this many seconds after the reply shows text


def conversation(platform: str) -> tuple[Step, ...]:
    """A mention, follow-ups in its thread (one asks for code, one about a screenshot, one is
    stopped halfway, one has the model search the docs with a tool), then a DM."""
    name = "Discord" if platform == "discord" else "Slack"
    return (
        Step("channel", "What is chat-bridge, in two sentences?"),
        Step("thread", f"How do you stay under {name}'s rate limits?"),
        Step("thread", "Show me a Python example: retry an API call with exponential backoff."),
        Step("thread", "What is wrong here?", image=True),
        Step("thread", "Tell me a long story about the bridge.", stop_after=2.0),
        Step("thread", "Search the docs for the sandbox: what does it show?"),
        Step("dm", "Can you keep a secret? We need a name for our team's bot."),
    )


# Each platform's replies land in this many conversations (a thread and a DM each).
CONVERSATIONS_PER_PLATFORM = 2


# How long alice waits for a Stop button that is briefly gone (a reply between two messages).
STOP_SHOWS_WITHIN = 5.0


class ScriptFailed(Exception):
    """A reply of the script did not end as the script expects."""


async def _press_stop_once_shown(
    tracker: Tracker, stage: Stage, exchange: Exchange, after: float, within: float
) -> None:
    """Wait until the reply shows text, then `after` seconds more, then press Stop."""
    try:
        async with asyncio.timeout(within):
            while exchange.first_text_at is None:
                tracker.refresh()
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise ScriptFailed(
            f"{stage.name}: the reply to “{exchange.prompt}” showed no text"
        ) from None
    await asyncio.sleep(after)
    # A long reply moves on to a new message: for a moment the full one has lost its Stop
    # button and the next is not posted yet. alice waits for the button as a reader would.
    deadline = asyncio.get_running_loop().time() + STOP_SHOWS_WITHIN
    while True:
        try:
            await stage.press_stop(exchange)
            return
        except LookupError:
            tracker.refresh()
            if exchange.done_at is not None or asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.05)


async def play(
    tracker: Tracker,
    stage: Stage,
    steps: tuple[Step, ...],
    *,
    pause: float,
    timeout: float,  # noqa: ASYNC109 (per reply, reported with the reply that was late)
    speed: float = 1.0,
) -> list[Exchange]:
    """Say each step as alice, wait for the bot's reply, pause as if reading it, go on."""
    played = []
    for step in steps:
        image = screenshot_png() if step.image else None
        exchange = await tracker.say(stage, step.where, step.text, image)
        expected = "complete"
        if step.stop_after:
            stop_after = step.stop_after / speed  # the local model streams `speed` times faster
            await _press_stop_once_shown(tracker, stage, exchange, stop_after, timeout)
            expected = "stopped"
        await tracker.wait(exchange, timeout)
        if exchange.status != expected:
            raise ScriptFailed(
                f"{stage.name}: the reply to “{step.text}” ended {exchange.status}: "
                f"{exchange.error or 'no reason given'}"
            )
        played.append(exchange)
        await asyncio.sleep(pause)
    return played
