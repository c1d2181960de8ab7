"""The typing indicator: renewed before Discord's 10 s run out, one loop per channel, and a
failed request never stops it. Time is a test-driven clock."""

from __future__ import annotations

import asyncio

from adapters.discord.indicators import RENEW_EVERY, TypingIndicators


class Clock:
    """A sleep that returns only when the test says time has passed."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self._sleeping: list[asyncio.Future[None]] = []

    async def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        future = asyncio.get_running_loop().create_future()
        self._sleeping.append(future)
        await future

    async def advance(self) -> None:
        sleeping, self._sleeping = self._sleeping, []
        for future in sleeping:
            if not future.done():
                future.set_result(None)
        await settle()


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


class Requests:
    """Records typing requests per channel; the very first one fails like a dropped connection."""

    def __init__(self) -> None:
        self.channels: list[int] = []

    def sender(self, channel_id: int):  # type: ignore[no-untyped-def]
        async def send() -> None:
            self.channels.append(channel_id)
            if len(self.channels) == 1:
                raise OSError("connection reset")

        return send


async def test_typing_is_renewed_until_the_last_reply_in_the_channel_stops() -> None:
    clock, requests = Clock(), Requests()
    typing = TypingIndicators(sleep=clock.sleep)
    typing.start(1, requests.sender(1))
    typing.start(1, requests.sender(1))  # a second reply in the same channel
    typing.start(2, requests.sender(2))
    await settle()
    assert requests.channels == [1, 2]  # one request per channel, at once

    await clock.advance()
    assert requests.channels == [1, 2, 1, 2]  # renewed, also after the failed first request
    assert set(clock.asked) == {RENEW_EVERY} and RENEW_EVERY < 10  # Discord shows it 10 s

    typing.stop(1)
    assert typing.active(1)  # the other reply in channel 1 is still being written
    typing.stop(1)
    assert not typing.active(1) and typing.active(2)
    await clock.advance()
    assert requests.channels == [1, 2, 1, 2, 2]
    await typing.close()
    assert not typing.active(2)


async def test_a_new_reply_after_the_last_stopped_shows_typing_again_at_once() -> None:
    clock, requests = Clock(), Requests()
    typing = TypingIndicators(sleep=clock.sleep)
    typing.start(1, requests.sender(1))
    await settle()
    typing.stop(1)
    typing.start(1, requests.sender(1))
    await settle()
    assert requests.channels == [1, 1]
    await typing.close()
