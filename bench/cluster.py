"""What ownership costs: message → first visible text with three instances on PostgreSQL against
one, when the instance that receives the event holds the workspace's lease and when it hands the
event over.

    .venv/bin/python -m bench.cluster --messages 200 --rounds 2 \
        --json docs/bench/cluster-ownership.json

Per variant a fresh PostgreSQL database and fresh `chat-bridge run` processes in Slack HTTP mode;
the Slack emulator posts each event to one instance (as a load balancer would): `single` is one
instance with `[cluster]` off (the one-process deployment), `single-cluster` the same with it on,
`owner` three instances with the events sent to the lease holder, `handover` three with the
events sent to an instance that does not hold it. One message at a time, each in a new thread,
a reply that begins at once; the first text is the moment the emulator shows the reply's first
word. The variants take turns in each round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.processes import LLM_KEY, ROOT, clean_env, terminate
from sandbox.llm_server import LLMServer, ScriptedReply
from sandbox.slack_emulator import SlackEmulator
from sandbox.slack_emulator.model import Change

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
VARIANTS = ("single", "single-cluster", "owner", "handover")
CHANNELS = [f"C0BENCH{n:02d}" for n in range(20)]
ANSWER = "Answer " + "word " * 20
SLACK_ENV = {
    "CHAT_BRIDGE_SLACK__BOT_TOKEN": "xoxb-test",
    "CHAT_BRIDGE_SLACK__APP_TOKEN": "xapp-test",
    "CHAT_BRIDGE_SLACK__SIGNING_SECRET": "test-secret",
    "CHAT_BRIDGE_LLM__API_KEY": LLM_KEY,
}


@dataclass
class Result:
    variant: str
    round: int
    first_text_ms: list[float] = field(default_factory=list)
    missing: int = 0

    def summary(self) -> dict[str, float]:
        return percentiles(self.first_text_ms)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

    return {"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": ordered[-1],
            "mean": statistics.fmean(ordered), "n": len(ordered)}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def fresh_database(admin: str) -> str:
    import asyncpg

    name = f"chat_bridge_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"


async def drop_database(admin: str, url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await conn.close()


class Instance:
    def __init__(self, name: str, port: int, log: Path) -> None:
        self.name, self.port, self.log = name, port, log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, config: str, workdir: Path) -> None:
        path = workdir / f"{self.name}.toml"
        path.write_text(config)
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bridge", "run", "--config", str(path),
                cwd=ROOT, env=clean_env() | SLACK_ENV, stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip

    def said(self, marker: str) -> bool:
        return self.log.exists() and marker in self.log.read_text(errors="replace")

    async def wait_for(self, marker: str, seconds: float = 60) -> None:
        async with asyncio.timeout(seconds):
            while not self.said(marker):
                assert self.process is not None
                if self.process.returncode is not None:
                    raise RuntimeError(f"{self.name} exited; see {self.log}")
                await asyncio.sleep(0.05)


def config(database: str, emu: SlackEmulator, llm: LLMServer, name: str, port: int,
           cluster: bool) -> str:  # fmt: skip
    text = (
        f'[storage]\nurl = "{database}"\n'
        f'[llm]\nbase_url = "{llm.base_url}"\nmodel = "bench"\ntitles = false\n'
        "[streaming]\nedit_interval = 1.0\n"
        f'[slack]\nenabled = true\nmode = "http"\nhttp_port = {port}\n'
        f'api_base_url = "{emu.api_base_url}"\nnative_streaming = "never"\n'
        # The emulator enforces no tier here: the workspace's update budget is no bottleneck
        # of what is measured (the channels take turns, so no channel sees more than 1 post/s).
        "update_rate_per_minute = 100000\n"
        '[logging]\nlevel = "INFO"\n'
    )
    if cluster:
        text += f'[cluster]\nenabled = true\ninstance_id = "{name}"\n'
    return text


async def run_variant(variant: str, round_: int, messages: int, admin: str, workdir: Path
                      ) -> Result:  # fmt: skip
    from storage import migrate

    result = Result(variant, round_)
    database = await fresh_database(admin)
    count = 3 if variant in ("owner", "handover") else 1
    cluster = variant != "single"
    instances: list[Instance] = []
    try:
        await migrate(database)
        async with SlackEmulator() as emu, LLMServer(record_requests=False) as llm:
            llm.script(*[ScriptedReply(text=ANSWER, tokens_per_second=200)] * (messages + 20))
            emu.delivery = "http"
            for n in range(count):
                name = f"{variant}-{round_}-{n}"
                instance = Instance(name, free_port(), workdir / f"{name}.log")
                await instance.start(
                    config(database, emu, llm, name, instance.port, cluster), workdir
                )
                instances.append(instance)
            for instance in instances:
                await instance.wait_for("running: ")
            target = instances[0]
            if cluster:
                holder = await lease_holder(instances, emu.identity.team_id)
                others = [i for i in instances if i is not holder]
                target = others[0] if variant == "handover" else holder
            emu.event_url = f"http://127.0.0.1:{target.port}/slack/events"
            try:
                await measure(emu, messages, result)
            finally:  # while the emulator still answers their last edits
                await stop_all(instances)
    finally:
        await stop_all(instances)
        await drop_database(admin, database)
    return result


async def stop_all(instances: list[Instance]) -> None:
    await asyncio.gather(
        *(terminate(i.process) for i in instances if i.process and i.process.returncode is None)
    )


async def lease_holder(instances: list[Instance], team: str) -> Instance:
    async with asyncio.timeout(60):
        while True:
            for instance in instances:
                if instance.said(f"holds slack:{team}\n"):
                    return instance
            await asyncio.sleep(0.05)


async def measure(emu: SlackEmulator, messages: int, result: Result) -> None:
    asked: dict[str, float] = {}
    shown: dict[str, float] = {}
    seen = asyncio.Event()

    def changed(change: Change) -> None:
        message = change.message
        if message is None or not message.bot_id or message.thread_ts is None:
            return
        root = message.thread_ts
        if root not in shown and "Answer" in (message.text or ""):
            shown[root] = time.perf_counter()
            seen.set()

    unsubscribe = emu.subscribe(changed)
    try:
        for n in range(messages + 10):
            seen.clear()
            started = time.perf_counter()
            channel = CHANNELS[n % len(CHANNELS)]
            root = await emu.user_message(channel, f"<@U0BOT> question {n}")
            asked[root] = started
            async with asyncio.timeout(30):
                while root not in shown:
                    await seen.wait()
                    seen.clear()
            await asyncio.sleep(0.1)
            if n >= 10:  # the first ten warm the processes up
                result.first_text_ms.append((shown[root] - started) * 1000)
    except TimeoutError:
        result.missing += 1
    finally:
        unsubscribe()


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--postgres", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/chat-bridge-bench-cluster"))
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    for round_ in range(args.rounds):
        order = VARIANTS[round_ % len(VARIANTS) :] + VARIANTS[: round_ % len(VARIANTS)]
        for variant in order:
            result = await run_variant(variant, round_, args.messages, args.postgres, args.workdir)
            print(
                f"round {round_} {variant}: {json.dumps(result.summary())}"
                f"{f', {result.missing} missing' if result.missing else ''}",
                flush=True,
            )
            results.append(result)
    table = report(results)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(
            {"command": " ".join(["python -m bench.cluster", *argv]),
             "results": [asdict(r) | {"summary": r.summary()} for r in results]},
            indent=1,
        ))  # fmt: skip
    return 0


def report(results: list[Result]) -> str:
    pooled = {v: percentiles([x for r in results if r.variant == v for x in r.first_text_ms])
              for v in VARIANTS}  # fmt: skip
    lines = ["| message → first text (ms) | " + " | ".join(VARIANTS) + " |",
             "|---|" + "---:|" * len(VARIANTS)]  # fmt: skip
    for key in ("p50", "p95", "p99", "max"):
        cells = [f"{pooled[v].get(key, float('nan')):.1f}" for v in VARIANTS]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    base = pooled["single"].get("p99", 0.0)
    deltas = [f"{pooled[v].get('p99', 0.0) - base:+.1f}" for v in VARIANTS]
    lines.append("| p99 against single | " + " | ".join(deltas) + " |")
    return "\n".join(lines)


def entry() -> None:
    raise SystemExit(asyncio.run(main(sys.argv[1:])))


if __name__ == "__main__":
    entry()
