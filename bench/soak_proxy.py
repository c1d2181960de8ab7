"""A TCP proxy between the soak's bridge instances and PostgreSQL, as its own process, that the
soak pauses and cuts on command: the database outages of `bench.soak`.

    python -m bench.soak_proxy --upstream 127.0.0.1:5432

It prints `listening on PORT`, then reads commands on stdin, one a line, and answers each with a
line once it is carried out:

- `pause S`: for S seconds no byte moves either way and new connections wait (a network stall:
  nothing is refused, every query in flight just takes S seconds longer);
- `cut S`: every open connection is closed at once and new ones are refused for S seconds (the
  server restarting, or a failover);
- `stats`: connections accepted, open, cut.

Its own process, so that the proxied traffic of three instances neither slows the harness's event
loop (which runs the emulators whose latency is measured) nor is slowed by it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

CHUNK = 64 * 1024


class Proxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._refusing_until = 0.0
        self._open: set[asyncio.StreamWriter] = set()
        self.accepted = 0
        self.cut_count = 0

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() < self._refusing_until:
            client_w.transport.abort()
            return
        self.accepted += 1
        await self._flowing.wait()  # a stalled network: the connection waits, it is not refused
        try:
            server_r, server_w = await asyncio.open_connection(*self._upstream)
        except OSError:
            client_w.transport.abort()
            return
        pair = (client_w, server_w)
        self._open.update(pair)
        try:
            await asyncio.gather(
                self._pump(client_r, server_w), self._pump(server_r, client_w),
                return_exceptions=True,
            )  # fmt: skip
        finally:
            for writer in pair:
                self._open.discard(writer)
                writer.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(CHUNK):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            # One side ended: end the other, so neither end waits on a half-open connection.
            with contextlib.suppress(Exception):
                writer.transport.abort()

    async def pause(self, seconds: float) -> None:
        self._flowing.clear()
        try:
            await asyncio.sleep(seconds)
        finally:
            self._flowing.set()

    async def cut(self, seconds: float) -> int:
        self._refusing_until = asyncio.get_running_loop().time() + seconds
        cut = list(self._open)
        for writer in cut:
            writer.transport.abort()
        self.cut_count += len(cut) // 2
        await asyncio.sleep(seconds)
        return len(cut) // 2

    def stats(self) -> str:
        return f"accepted {self.accepted} open {len(self._open) // 2} cut {self.cut_count}"


async def serve(upstream: str, port: int) -> None:
    host, _, upstream_port = upstream.rpartition(":")
    proxy = Proxy(host or "127.0.0.1", int(upstream_port))
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", port)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    running: set[asyncio.Task[None]] = set()

    async def carry_out(verb: str, argument: float) -> None:
        if verb == "pause":
            await proxy.pause(argument)
            print(f"resumed after {argument:g}s", flush=True)
        elif verb == "cut":
            count = await proxy.cut(argument)
            print(f"cut {count} connections; accepting again after {argument:g}s", flush=True)

    async with server:
        while line := (await stdin.readline()).decode().strip():
            verb, _, rest = line.partition(" ")
            if verb == "stats":
                print(proxy.stats(), flush=True)
                continue
            if verb not in ("pause", "cut"):
                print(f"unknown command {line!r}", flush=True)
                continue
            task = loop.create_task(carry_out(verb, float(rest or 0)))
            running.add(task)
            task.add_done_callback(running.discard)
        # stdin closed: the harness is done (or gone)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", default="127.0.0.1:5432")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.upstream, args.port))


if __name__ == "__main__":
    main()
