"""Follows every exchange: its visible state on each platform change, its end from the store.

A reply is over when the bridge has stored it as finished: the platforms alone cannot tell a
finished message from one that pauses (inside a code block no cursor shows), nor the end of a
message from a split into a continuation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from bridge.domain import Role, StoredMessage
from sandbox.exchange import Exchange, Stage, Where
from storage import SqlChatStore

POLL_INTERVAL = 0.05


class Watcher(Protocol):
    """What the display implements; `label` says where the reply shows."""

    def sent(self, exchange: Exchange, label: str) -> None: ...

    def changed(self, exchange: Exchange, label: str) -> None: ...

    def finished(self, exchange: Exchange, label: str) -> None: ...

    def note(self, text: str) -> None: ...


class ReplyTimeout(Exception):
    """A reply did not finish in time."""


class Tracker:
    def __init__(
        self,
        store: SqlChatStore,
        watcher: Watcher,
        *,
        placeholder: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._watcher = watcher
        self._placeholder = placeholder
        self._clock = clock
        self.exchanges: list[Exchange] = []
        self._stages: dict[Exchange, Stage] = {}
        self._finished: dict[Exchange, asyncio.Event] = {}
        # Per place, the last message of the latest finished reply: the next reply comes after.
        self._last_reply: dict[tuple[str, str], str] = {}
        # Per reply with another queued behind it: how many of the messages in its place are
        # known to be its own (the store said it was unfinished when they showed).
        self._vetted: dict[Exchange, int] = {}
        self._held: set[Exchange] = set()  # replies whose newest message awaits that verdict
        self._wake = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None

    def watch(self, stage: Stage) -> None:
        stage.subscribe(self.refresh, self._watcher.note)

    async def start(self) -> None:
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

    async def say(
        self, stage: Stage, where: Where, text: str, image: bytes | None = None
    ) -> Exchange:
        """Post as the stage's person and follow the reply."""
        exchange = await stage.say(where, text, image)
        self.exchanges.append(exchange)
        self._stages[exchange] = stage
        self._finished[exchange] = asyncio.Event()
        self._watcher.sent(exchange, stage.label(exchange))
        self.refresh()
        return exchange

    def open(self) -> list[Exchange]:
        return [e for e in self.exchanges if not e.done]

    def refresh(self) -> None:
        """Re-read what each open reply shows; called on every visible change of a platform."""
        now = self._clock()
        answering: dict[tuple[str, str], Exchange] = {}
        waiting: set[tuple[str, str]] = set()
        for exchange in self.open():
            place = (exchange.platform, exchange.place_id)
            if place in answering:
                # The bridge answers a chat's messages one at a time, in order: this one waits.
                waiting.add(place)
            else:
                answering[place] = exchange
        for place, exchange in answering.items():
            stage = self._stages[exchange]
            state = stage.state(exchange, now, self._last_reply.get(place))
            if place in waiting and len(state.texts) > self._vetted.get(exchange, 1):
                # A new message may be this reply's continuation or the next reply's
                # placeholder; the store tells which, at once.
                self._held.add(exchange)
                self._wake.set()
                continue
            if exchange.observe(state, now, self._placeholder):
                self._watcher.changed(exchange, stage.label(exchange))

    async def wait(self, exchange: Exchange, timeout: float) -> Exchange:  # noqa: ASYNC109
        try:
            async with asyncio.timeout(timeout):
                await self._finished[exchange].wait()
        except TimeoutError:
            label = self._stages[exchange].label(exchange)
            shown = exchange.state.texts[-1][-60:] if exchange.state.texts else "nothing"
            raise ReplyTimeout(
                f"{exchange.platform}: the reply in {label} to “{exchange.prompt}” did not "
                f"finish within {timeout:g} s (it shows: {shown!r})"
            ) from None
        return exchange

    async def wait_all(self, timeout: float) -> None:  # noqa: ASYNC109
        for exchange in list(self.open()):
            await self.wait(exchange, timeout)

    async def _poll(self) -> None:
        while True:
            # Time changes what shows too (a typing indicator lapses after ten seconds).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_INTERVAL):
                    await self._wake.wait()
            self._wake.clear()
            self.refresh()
            for exchange in self.open():
                if exchange.state.texts or exchange in self._held:
                    await self._check_stored(exchange)

    async def wait_accepted(self, exchange: Exchange, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until the bridge has stored the user's message; False if it has not in time.

        A follow-up sent before the bridge took the first message of a thread would find no
        conversation there, and be ignored, as the bridge ignores threads it is not part of.
        """
        deadline = self._clock() + timeout
        while self._clock() < deadline:
            asked, _ = await self._stored(exchange)
            if asked is not None:
                return True
            await asyncio.sleep(POLL_INTERVAL)
        return False

    async def _check_stored(self, exchange: Exchange) -> None:
        stage = self._stages[exchange]
        place = (exchange.platform, exchange.place_id)
        visible = stage.state(exchange, self._clock(), self._last_reply.get(place))
        _, reply = await self._stored(exchange)
        self._held.discard(exchange)
        if reply is None or not reply.status.finished:
            # Unfinished now, so every message that showed before asking is this reply's.
            self._vetted[exchange] = max(len(visible.texts), self._vetted.get(exchange, 1))
            self.refresh()
            return
        # The stored reply names its messages: a next reply in the same place may have posted
        # its placeholder since (the bridge stores a reply as finished, then takes the next).
        now = self._clock()
        current = stage.state(exchange, now, self._last_reply.get(place))
        own = set(reply.platform_message_ids)
        kept = [(i, t) for i, t in zip(current.message_ids, current.texts, strict=True) if i in own]
        final = replace(
            current, texts=tuple(t for _, t in kept), message_ids=tuple(i for i, _ in kept)
        )
        if exchange.observe(final, now, self._placeholder):
            self._watcher.changed(exchange, stage.label(exchange))
        if reply.platform_message_ids:
            self._last_reply[place] = reply.platform_message_ids[-1]
        exchange.done_at = exchange.changed_at or now
        exchange.status = reply.status.value
        exchange.error = reply.error
        exchange.usage = reply.usage
        exchange.final_texts = final.texts
        self._vetted.pop(exchange, None)
        self._watcher.finished(exchange, stage.label(exchange))
        self._finished[exchange].set()
        self.refresh()  # the next reply in this place, if one waits, starts showing now

    async def _stored(
        self, exchange: Exchange
    ) -> tuple[StoredMessage | None, StoredMessage | None]:
        """The user's message as the bridge stored it, and the reply to it (if any yet)."""
        chat = await self._store.get_chat(exchange.key)
        if chat is None:
            return None, None
        messages = await self._store.messages(chat.id)
        asked = next(
            (
                m
                for m in messages
                if m.role is Role.USER and exchange.user_message_id in m.platform_message_ids
            ),
            None,
        )
        if asked is None:
            return None, None
        reply = next(
            (m for m in messages if m.reply_to_id == asked.id and m.response_number == 0), None
        )
        return asked, reply
