"""Plays one scripted reply as a paced SSE stream, faults included, for the local LLM server."""

from __future__ import annotations

import math
from collections.abc import Awaitable
from dataclasses import dataclass

from aiohttp import web

from .script import Fault, FaultKind
from .ticker import Ticker
from .wire import DONE_EVENT, ChunkEvents, error_event

# aiohttp tells a handler that its client left only when it writes; silent waits poll instead.
DISCONNECT_POLL = 0.1
# Float slack when comparing loop times (a microsecond is nothing next to a tick).
_EPSILON = 1e-6
_NOT_STREAMED = (FaultKind.STATUS, FaultKind.NOT_A_STREAM)


@dataclass(slots=True)
class LLMServerStats:
    """Counters of the local LLM server. ``chunks_sent`` counts content, reasoning and tool-call
    deltas."""

    requests: int = 0
    streams_started: int = 0
    streams_completed: int = 0  # the whole reply went out (with [DONE] unless send_done=False)
    streams_aborted: int = 0  # cut short: a fault, the client left, the server stopped
    chunks_sent: int = 0
    peak_streams_active: int = 0  # the most streams open at one moment (limits.llm_concurrent_...)

    @property
    def streams_active(self) -> int:
        return self.streams_started - self.streams_completed - self.streams_aborted


def client_gone(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def wait_until(ticker: Ticker, request: web.BaseRequest, when: float) -> float | None:
    """Sleep on the ticker until ``when``; None if the client left or the server is closing."""
    loop_time = ticker.loop_time
    while True:
        woken = await ticker.at(min(when, loop_time() + DISCONNECT_POLL))
        if woken is None or client_gone(request):
            return None
        if woken >= when - _EPSILON:
            return woken


class ReplyStream:
    """Writes the chunk events of every choice, step by step, on the shared ticker.

    Step ``i`` carries the ``i``-th chunk of each choice (choices interleave); steps that fall
    due within one tick leave in a single write. Faults count steps. The first
    ``reasoning_steps`` steps are a reasoning model's thinking, one every ``reasoning_interval``
    seconds; they go out as reasoning deltas unless ``reasoning_in_content`` (think tags).
    ``tool_events``: per choice, the events of its tool calls, one a step after its content.
    """

    def __init__(
        self,
        *,
        request: web.BaseRequest,
        response: web.StreamResponse,
        ticker: Ticker,
        stats: LLMServerStats,
        events: ChunkEvents,
        choices: list[list[str]],
        interval: float,
        first_token_delay: float,
        fault: Fault | None,
        usage_event: bytes | None,
        send_done: bool = True,
        reasoning_steps: int = 0,
        reasoning_interval: float | None = None,
        reasoning_in_content: bool = False,
        tool_events: list[list[bytes]] | None = None,
    ) -> None:
        self._request = request
        self._response = response
        self._ticker = ticker
        self._stats = stats
        self._events = events
        self._choices = choices
        self._interval = interval
        self._first_token_delay = first_token_delay
        # Status and not-a-stream faults are answered before any stream starts.
        streamed = fault is not None and fault.kind not in _NOT_STREAMED
        self._fault = fault if streamed else None
        self._usage_event = usage_event
        self._send_done = send_done
        self._tool_events = tool_events
        lengths = [
            len(chunks) + (len(tool_events[index]) if tool_events else 0)
            for index, chunks in enumerate(choices)
        ]
        self._steps = max(1, *lengths) if lengths else 1
        # The step that carries each choice's finish reason.
        self._last_steps = [max(length, 1) - 1 for length in lengths]
        self._thinking = reasoning_steps
        self._think_interval = interval if reasoning_interval is None else reasoning_interval
        # The steps sent as reasoning deltas (none when the thinking is content in think tags).
        self._reasoning_deltas = 0 if reasoning_in_content else reasoning_steps

    async def run(self) -> bool:
        """Stream the reply; True when all of it went out."""
        try:
            return await self._play()
        except ConnectionError:  # the client went away between our check and the write
            return False

    async def _play(self) -> bool:
        now = self._ticker.loop_time()
        if self._first_token_delay > 0:
            woken = await self._sleep_until(now + self._first_token_delay)
            if woken is None:
                return self._abort()
            now = woken
        origin = now  # step i falls due at origin + i * interval
        fault = self._fault
        fault_step = min(fault.after_chunks, self._steps) if fault is not None else None
        step = 0
        while True:
            limit = self._steps if fault_step is None else fault_step
            upto = min(limit, self._due_steps(step, origin, now))
            parts: list[bytes] = []
            sent = self._add_steps(parts, step, upto)
            step = upto
            if step == self._steps and fault_step is None:
                if self._usage_event is not None:
                    parts.append(self._usage_event)
                if self._send_done:
                    parts.append(DONE_EVENT)
                # write_eof sends the last events and the chunked terminator in one write.
                await self._response.write_eof(b"".join(parts))
                self._stats.chunks_sent += sent
                return True
            if parts:
                await self._response.write(b"".join(parts))
                self._stats.chunks_sent += sent
            if fault is not None and step == fault_step:
                if fault.kind is FaultKind.CUT:
                    self._cut()
                    return False
                if fault.kind is FaultKind.ERROR:
                    await self._response.write_eof(error_event(fault.message))
                    return False
                if fault.kind is FaultKind.END:
                    await self._response.write_eof()
                    return False
                woken = await self._sleep_until(self._ticker.loop_time() + fault.seconds)
                if woken is None:
                    return self._abort()
                now, origin = woken, woken - self._time_of(step)  # the schedule resumes
                fault = fault_step = None
                continue
            woken = await self._sleep_until(origin + self._time_of(step))
            if woken is None:
                return self._abort()
            now = woken

    def _sleep_until(self, when: float) -> Awaitable[float | None]:
        return wait_until(self._ticker, self._request, when)

    def _time_of(self, step: int) -> float:
        """When ``step`` falls due, after the first one: thinking first, then the answer."""
        thinking, think_interval = self._thinking, self._think_interval
        if step <= thinking:
            return step * think_interval
        return thinking * think_interval + (step - thinking) * self._interval

    def _due_steps(self, step: int, origin: float, now: float) -> int:
        """How many steps are due at ``now`` (at least ``step + 1``: we only get here once
        step's own time has come, whatever the float rounding says)."""
        elapsed = now - origin + _EPSILON
        thought = self._thinking * self._think_interval
        if elapsed < thought:
            due = math.floor(elapsed / self._think_interval) + 1
        elif self._interval == 0:
            due = self._steps
        else:
            due = self._thinking + math.floor((elapsed - thought) / self._interval) + 1
        return max(step + 1, due)

    def _add_steps(self, parts: list[bytes], start: int, stop: int) -> int:
        """Append the events of steps [start, stop); returns how many deltas."""
        events = self._events
        reasoning_deltas = self._reasoning_deltas
        tools = self._tool_events
        last_steps = self._last_steps
        sent = 0
        for step in range(start, stop):
            for index, chunks in enumerate(self._choices):
                if step == 0:
                    parts.append(events.role(index))
                if step < len(chunks):
                    if step < reasoning_deltas:
                        events.add_reasoning(parts, index, chunks[step])
                    else:
                        events.add_content(parts, index, chunks[step])
                    sent += 1
                elif tools is not None and step - len(chunks) < len(tools[index]):
                    parts.append(tools[index][step - len(chunks)])
                    sent += 1
                if step == last_steps[index]:
                    parts.append(events.finish(index))
        return sent

    def _cut(self) -> None:
        # close(), not abort(): what was written still reaches the client, then the body stops
        # short of its terminating chunk, as when an upstream proxy or worker dies mid-reply.
        transport = self._request.transport
        if transport is not None:
            transport.close()

    def _abort(self) -> bool:
        transport = self._request.transport
        if transport is not None:
            transport.abort()
        return False
