"""Benchmark of files on users' messages (issue #15): 50 concurrent replies of which 10 carry an
8 MB photo, against the same 50 with no images.

    python -m bench.attachments --rounds 3 --json docs/bench/attachments.json

Each run is a fresh process (its own peak RSS): the responder with the real SQL store on SQLite,
the files vault in a temporary folder, the local LLM server (its own process, streaming real SSE,
reading the image parts in the request body) and the in-process platform fake. The photos are
served over real HTTP by a local file host in a process of its own, standing in for the
platform's (the download, the decoding and downscaling with Pillow, the vault and the base64
request body are all in the measurement; the photo is noise, the worst case for its size).
Figures: message to first text of the 40 replies without an image (p50 / p99), the same for the
10 with one, the process's peak RSS and the event loop's lag. Rounds alternate the two runs; the
comparison is the median over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from adapters.llm import OpenAICompatibleModel
from bench.responder import llm_server, percentile
from bridge.app import limit_malloc_arenas, tune_garbage_collector
from bridge.attachments import AttachmentLimits, Attachments
from bridge.config import LLMSettings
from bridge.domain import AttachmentRef, ChatKey, InboundMessage, MessageStatus
from bridge.ports import FileUnavailable
from bridge.responder import Responder, ResponderSettings
from bridge.scheduler import EditScheduler
from sandbox.memory_platform import RecordingSurface
from storage import SqlChatStore, create_engine, migrate
from storage.files import DirectoryVault

ROOT = Path(__file__).resolve().parents[1]
PHOTO_BYTES = 8_000_000


def photo(target: int = PHOTO_BYTES) -> bytes:
    """A 4032x3024 JPEG (a phone photo's size) of about `target` bytes: noise, so it does not
    compress away, at the quality that lands nearest."""
    from PIL import Image

    size = (4032, 3024)
    noise = [Image.effect_noise(size, sigma) for sigma in (40, 60, 80)]
    image = Image.merge("RGB", noise)
    best = b""
    for quality in (60, 70, 75, 80, 85, 90, 95):
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality)
        if not best or abs(out.tell() - target) < abs(len(best) - target):
            best = out.getvalue()
    return best


class HttpFiles:
    """A FileSource reading from the local file host in chunks, stopping past max_bytes (as the
    adapters' sources do)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def fetch(self, ref: AttachmentRef, max_bytes: int) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.get(ref.source) as response:
            if response.status != 200:
                raise FileUnavailable(f"HTTP {response.status}")
            data = bytearray()
            async for chunk in response.content.iter_chunked(256 * 1024):
                data += chunk
                if len(data) > max_bytes:
                    raise FileUnavailable("too large", too_large=True)
            return bytes(data)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def serve_photo() -> None:
    """The file host (`--serve`): one photo at /files/<any name>, until killed. At the lowest
    priority: it stands for the platform's CDN, which is not on the bridge's machine."""
    os.nice(19)
    data = photo()

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=data, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/files/{name}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"serving {len(data)} http://127.0.0.1:{port}/files", flush=True)
    await asyncio.Event().wait()


@contextlib.contextmanager
def file_host() -> Iterator[tuple[str, int]]:
    command = [sys.executable, "-m", "bench.attachments", "--serve"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        _, size, url = process.stdout.readline().split()
        yield url, int(size)
    finally:
        process.terminate()
        process.wait(timeout=10)


async def loop_lag(lags: list[float], every: float = 0.005) -> None:
    """How late the event loop wakes a 5 ms sleep: what else held it (the replies' own work,
    and whatever the images cost it)."""
    clock = time.perf_counter
    while True:
        before = clock()
        await asyncio.sleep(every)
        lags.append(clock() - before - every)


def message(i: int, base: str | None, size: int) -> InboundMessage:
    files: tuple[AttachmentRef, ...] = ()
    if base is not None:
        files = (AttachmentRef(f"photo-{i}.jpg", size, "image/jpeg", f"{base}/photo-{i}.jpg"),)
    return InboundMessage(
        event_id=f"ev-{i}",
        chat_key=ChatKey("bench", "W", f"C{i}"),
        author_id="U",
        text=f"what is in this picture? {i}",
        platform_message_id=f"m-{i}",
        attachments=files,
    )


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.pin:
        os.sched_setaffinity(0, {0})  # the bridge alone on core 0
    limit_malloc_arenas()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/bench.db"
        await migrate(url)
        engine = create_engine(url)
        store = SqlChatStore(engine)
        llm = OpenAICompatibleModel(
            LLMSettings(base_url=args.llm_url, api_key=SecretStr("b"), idle_timeout=120)
        )
        files = HttpFiles()
        attachments = Attachments(
            store=store,
            vault=DirectoryVault(Path(tmp) / "files"),
            limits=AttachmentLimits(max_bytes=25_000_000, max_images=4),
            sources={"bench": files},
        )
        clock = time.perf_counter
        responder = Responder(
            store=store,
            llm=llm,
            scheduler=EditScheduler(interval=1.0, clock=clock),
            settings=ResponderSettings(model="bench", titles=False, idle_timeout=120.0),
            attachments=attachments,
        )
        base, size = args.files_url, args.photo_bytes
        tune_garbage_collector()
        try:
            with_image = (
                set(range(0, args.replies, args.replies // args.images)) if args.images else set()
            )
            surfaces = [
                RecordingSurface(limit=40_000, keep_writes=False) for _ in range(args.replies)
            ]
            lags: list[float] = []
            meter = asyncio.ensure_future(loop_lag(lags))
            started = clock()
            reports = await asyncio.gather(
                *(
                    responder.handle(
                        "bench",
                        message(i, base if i in with_image else None, size),
                        surfaces[i],
                    )
                    for i in range(args.replies)
                )
            )
            wall = clock() - started
            meter.cancel()
            peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        finally:
            await files.close()
            await llm.stop()
            await engine.dispose()
    assert all(r is not None and r.status is MessageStatus.COMPLETE for r in reports), reports[:2]
    plain = [r.first_text_at - r.received_at for i, r in enumerate(reports) if i not in with_image]  # type: ignore[union-attr,operator]
    # The bridge's own share of it: from the model's first token to the first text shown.
    own = [r.first_text_at - r.first_delta_at for i, r in enumerate(reports) if i not in with_image]  # type: ignore[union-attr,operator]
    token = [r.first_delta_at - r.received_at for i, r in enumerate(reports) if i not in with_image]  # type: ignore[union-attr,operator]
    imaged = [r.first_text_at - r.received_at for i, r in enumerate(reports) if i in with_image]  # type: ignore[union-attr,operator]
    return {
        "replies": args.replies,
        "images": len(with_image),
        "photo_bytes": size if with_image else 0,
        "wall_s": round(wall, 2),
        "plain_first_text_p50_ms": round(percentile(plain, 0.50) * 1000, 1),
        "plain_first_text_p99_ms": round(percentile(plain, 0.99) * 1000, 1),
        "plain_first_text_max_ms": round(max(plain) * 1000, 1),
        "plain_first_token_p50_ms": round(percentile(token, 0.50) * 1000, 1),
        "plain_first_token_p99_ms": round(percentile(token, 0.99) * 1000, 1),
        "plain_token_to_text_p50_ms": round(percentile(own, 0.50) * 1000, 1),
        "plain_token_to_text_p99_ms": round(percentile(own, 0.99) * 1000, 1),
        "image_first_text_p50_ms": round(percentile(imaged, 0.50) * 1000, 1) if imaged else None,
        "image_first_text_max_ms": round(max(imaged) * 1000, 1) if imaged else None,
        "peak_rss_mb": round(peak_rss_mb, 1),
        "loop_lag_p99_ms": round(percentile(lags, 0.99) * 1000, 1),
        "loop_lag_max_ms": round(max(lags) * 1000, 1),
    }


def run_apart(args: argparse.Namespace, url: str, images: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.attachments", "--one", "--llm-url", url]
    command += ["--replies", str(args.replies), "--images", str(images)]
    command += ["--files-url", args.files_url, "--photo-bytes", str(args.photo_bytes)]
    command += ["--pin"] if args.pin else []
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def compare(args: argparse.Namespace) -> dict[str, Any]:
    rounds = []
    if args.pin:
        # The model's server and the file host (and this harness) on core 1, as if elsewhere.
        os.sched_setaffinity(0, {1})
    with llm_server(args.tokens, args.rate) as url, file_host() as (files_url, size):
        args.files_url, args.photo_bytes = files_url, size
        for n in range(args.rounds):
            order = (0, args.images) if n % 2 == 0 else (args.images, 0)
            runs = {images: run_apart(args, url, images) for images in order}
            rounds.append({"without": runs[0], "with": runs[args.images]})
            print(json.dumps(rounds[-1]), file=sys.stderr, flush=True)

    def median(kind: str, key: str) -> float:
        return float(statistics.median(r[kind][key] for r in rounds))

    summary: dict[str, Any] = {
        key: {"without": median("without", key), "with": median("with", key)}
        for key in (
            "plain_first_text_p50_ms",
            "plain_first_text_p99_ms",
            "plain_first_token_p50_ms",
            "plain_first_token_p99_ms",
            "plain_token_to_text_p50_ms",
            "plain_token_to_text_p99_ms",
            "peak_rss_mb",
            "loop_lag_p99_ms",
            "loop_lag_max_ms",
        )
    }
    p99 = summary["plain_first_text_p99_ms"]
    summary["plain_p99_change_pct"] = round((p99["with"] / p99["without"] - 1) * 100, 1)
    return {"rounds": rounds, "median": summary, "load_average": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replies", type=int, default=50)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", action="store_true", help="one run in this process (JSON out)")
    parser.add_argument("--llm-url")
    parser.add_argument("--files-url")
    parser.add_argument("--photo-bytes", type=int, default=0)
    parser.add_argument("--serve", action="store_true", help="be the file host")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the bridge on core 0, the model's server and the file host on core 1",
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve_photo())
        return
    if args.one:
        print(json.dumps(asyncio.run(measure(args))))
        return
    result = compare(args)
    print(json.dumps(result["median"], indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
