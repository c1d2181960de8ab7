"""The script's Stop press: alice waits for a Stop button that is briefly gone, and no longer."""

from __future__ import annotations

from typing import Any, cast

import pytest

from bridge.domain import ChatKey
from sandbox import script
from sandbox.exchange import Exchange, Stage
from sandbox.tracker import Tracker


class Refreshes:
    def refresh(self) -> None:
        pass


class ButtonAfter:
    """A stage whose reply shows its Stop button only from the `shows_at`-th look on."""

    name = "discord"

    def __init__(self, shows_at: int) -> None:
        self.shows_at = shows_at
        self.looks = 0
        self.pressed = False

    async def press_stop(self, exchange: Exchange) -> None:
        self.looks += 1
        if self.looks < self.shows_at:
            raise LookupError("discord: no Stop button shows")
        self.pressed = True


def shown_exchange() -> Exchange:
    exchange = Exchange("discord", "thread", "story", ChatKey("discord", "g", "c"), "1", "2", 0.0)
    exchange.first_text_at = 0.0
    return exchange


async def press(stage: ButtonAfter, exchange: Exchange) -> None:
    await script._press_stop_once_shown(
        cast(Tracker, Refreshes()), cast(Stage, stage), exchange, 0.0, 1.0
    )


async def test_a_stop_button_gone_between_two_messages_is_waited_for() -> None:
    stage = ButtonAfter(shows_at=4)
    await press(stage, shown_exchange())
    assert stage.pressed and stage.looks == 4


async def test_no_stop_button_at_all_fails_after_the_wait(monkeypatch: Any) -> None:
    monkeypatch.setattr(script, "STOP_SHOWS_WITHIN", 0.2)
    stage = ButtonAfter(shows_at=10**6)
    with pytest.raises(LookupError):
        await press(stage, shown_exchange())
    assert not stage.pressed and stage.looks > 1


async def test_a_reply_that_ended_is_not_waited_for() -> None:
    stage = ButtonAfter(shows_at=10**6)
    exchange = shown_exchange()
    exchange.done_at = 1.0
    with pytest.raises(LookupError):
        await press(stage, exchange)
    assert stage.looks == 1
