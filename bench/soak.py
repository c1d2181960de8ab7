"""Soak (issue #14): three `chat-bridge run` instances on one PostgreSQL database, answering a
Slack workspace and a Discord guild at a steady rate for minutes while faults are injected.

    .venv/bin/python -m bench.soak --minutes 10 --rate 1 --json docs/bench/soak.json

The harness runs the Slack and Discord emulators; the LLM server (`bench.llm_process`) and a TCP
proxy in front of PostgreSQL (`bench.soak_proxy`) are processes of their own, so are the bridge
instances, each with `[cluster]` on and its database URL pointing at the proxy. Mentions
alternate between Slack threads and Discord channels; each gets a reply of its own that streams
for a while, so many stream at once. Faults follow `bench.soak_faults.SCHEDULE`. At the end every
mention is classified (the model's text, a notice, a duplicate, lost) and the figures printed and
written as JSON (`bench.soak_report`).

Topologies (`--topology`): `combined` is what issue #14 asks for, three instances that each run
both platforms with `[cluster]`, Discord on one shard (`shard_count = 1`) that all three connect,
its lease deciding which one answers. `split` is for revisions whose Discord adapter does not take
part in the cluster (before 60fda21: a process with both platforms and `[cluster]` answered no
Slack message at all): three clustered instances answer Slack, and three more answer Discord
without `[cluster]` on a database of their own (exactly once through the event claims alone).
`auto` picks `combined` when the Discord adapter serves leases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.soak_db import SoakDatabases
from bench.soak_faults import SCHEDULE, Faults
from bench.soak_fleet import Fleet, Instance, instance_config
from bench.soak_report import figures, print_table
from bench.soak_world import World

log = logging.getLogger("bench.soak")
# Outcomes at the end of the settle time that the drain can still change.
LATE_IF = ("lost", "stuck", "mismatch")
DEFAULT_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class Group:
    """Instances configured alike: which platforms they answer, on which database."""

    name: str
    platforms: tuple[str, ...]
    cluster: bool
    database: str  # key of its database in SoakDatabases


def discord_in_cluster() -> bool:
    from adapters.discord.adapter import DiscordAdapter

    return hasattr(DiscordAdapter, "leases_served") and hasattr(DiscordAdapter, "take_handoff")


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.zero = time.monotonic()
        self.world = World(self.now, args.tokens)
        self.fleet = Fleet(workdir, World.env(), self.zero)
        self.topology = args.topology
        if self.topology == "auto":
            self.topology = "combined" if discord_in_cluster() else "split"
        if self.topology == "combined":
            self.groups = [Group("", ("slack", "discord"), True, "main")]
        else:
            self.groups = [
                Group("slack-", ("slack",), True, "slack"),
                Group("discord-", ("discord",), False, "discord"),
            ]
        self.db = SoakDatabases(args.postgres)
        self.group_of: dict[str, Group] = {}
        self.proxy_port = 0
        self.llm_url = ""
        self.leases_now: dict[str, str | None] = {}
        self.lease_log: list[tuple[float, str, str | None]] = []
        self.loop_lag: list[float] = []
        self.faults = Faults(
            self, db_pause=args.db_pause, db_cut=args.db_cut, restart_after=args.restart_after
        )
        self.traffic_start = 0.0
        self.traffic_end = 0.0
        self._background: list[asyncio.Task[None]] = []
        self._stopped = False
        self.outcomes: dict[int, str] = {}
        self.settled_at = 0.0
        self.leases_missing: list[str] = []

    def now(self) -> float:
        return time.monotonic() - self.zero

    # --- instances -----------------------------------------------------------------------------

    async def start_instance(self, group: Group) -> Instance:
        index = sum(1 for g in self.group_of.values() if g is group)
        name = f"{group.name}{'abcdefghijklmnopqrstuvwxyz'[index]}"
        url = self.db.url(group.database, proxy_port=self.proxy_port, driver=True)
        config = instance_config(
            name=name,
            database_url=url,
            llm_url=self.llm_url,
            slack=self.world.slack_section() if "slack" in group.platforms else None,
            discord=self.world.discord_section() if "discord" in group.platforms else None,
            cluster=(self.args.lease_seconds, self.args.takeover_seconds)
            if group.cluster
            else None,
            overrides=World.overrides() if "slack" in group.platforms else "",
        )
        self.group_of[name] = group
        return await self.fleet.start(name, config, group.platforms, group.cluster)

    async def replace(self, victim: Instance) -> Instance:
        instance = await self.start_instance(self.group_of[victim.name])
        await self.fleet.wait_running(instance)
        return instance

    def lease_of(self, platform: str) -> str | None:
        group = next(g for g in self.groups if platform in g.platforms)
        if not group.cluster:
            return None
        if platform == "slack":
            return f"slack:{self.world.slack.identity.team_id}"
        return "discord:shard:0"

    def holder_of(self, lease: str) -> Instance | None:
        holder = self.leases_now.get(lease)
        for instance in self.fleet.instances:
            if instance.name == holder and instance.alive:
                return instance
        return None

    def serving(self, platform: str) -> list[Instance]:
        return [i for i in self.fleet.instances if i.alive and platform in i.platforms]

    async def in_flight(self, instance: Instance, platform: str) -> list[str]:
        """The mentions `instance` was answering (or had stored and queued), by platform id."""
        return await self.db.pending(self.group_of[instance.name].database, platform, instance.pid)

    async def owner_of(self, instance: Instance) -> str | None:
        return await self.db.owner_of(self.group_of[instance.name].database, instance.pid)

    async def busiest(self, platform: str) -> Instance | None:
        candidates = self.serving(platform)
        if not candidates:
            return None
        counts = [len(await self.in_flight(i, platform)) for i in candidates]
        return candidates[counts.index(max(counts))]

    # --- watchers ------------------------------------------------------------------------------

    async def watch_leases(self) -> None:
        keys = {g.database for g in self.groups if g.cluster}
        while True:
            for key in keys:
                with contextlib.suppress(Exception):  # the watcher must outlive a bad moment
                    for name, holder in (await self.db.leases(key)).items():
                        if self.leases_now.get(name, "?") != holder:
                            self.leases_now[name] = holder
                            self.lease_log.append((round(self.now(), 2), name, holder))
            await asyncio.sleep(0.2)

    async def watch_processes(self) -> None:
        next_sample = 0.0
        while True:
            await self.fleet.read_logs()
            if self.now() >= next_sample:
                self.fleet.sample()
                next_sample = self.now() + self.args.sample_every
            await asyncio.sleep(0.5)

    async def watch_loop(self) -> None:
        """How late the harness's own loop wakes: late wake-ups would show as platform latency."""
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.1)
            self.loop_lag.append(time.monotonic() - before - 0.1)

    def _watch(self, *coroutines: Any) -> None:
        loop = asyncio.get_running_loop()
        self._background.extend(loop.create_task(c) for c in coroutines)

    # --- the run -------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        args = self.args
        try:
            await self.db.create(sorted({g.database for g in self.groups}))
            await self.world.start()
            try:
                return await self._run()
            finally:
                await self._stop()
                await self.world.stop()
        finally:
            if not args.keep:
                await self.db.drop()

    async def _run(self) -> dict[str, Any]:
        args = self.args
        self.llm_url = await self.fleet.start_llm(args.tokens, args.token_rate)
        self.proxy_port = await self.fleet.start_proxy(self.db.upstream())
        self._watch(self.watch_processes(), self.watch_leases(), self.watch_loop())
        first = [await self.start_instance(g) for g in self.groups for _ in range(3)]
        await asyncio.gather(*(self.fleet.wait_running(i) for i in first))
        await self._wait_for_leases()
        duration = await self._drive()
        await self._stop()
        # Again once the instances have drained (SIGTERM lets replies in flight finish): what is
        # still unanswered now is lost; what was answered only now was late.
        at_settle, self.outcomes = self.outcomes, self.world.final_outcomes()
        late = [k for k, v in at_settle.items() if v in LATE_IF and v != self.outcomes[k]]
        return figures(self, self.outcomes, self.settled_at, duration, late)

    async def _stop(self) -> None:
        """SIGTERM to the instances (their exit codes are part of the result), then the rest."""
        if self._stopped:
            return
        self._stopped = True
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.faults.cancel()  # no replacement starts once the instances are stopping
        await self.fleet.stop_all()

    async def _wait_for_leases(self) -> None:
        wanted = [lease for p in ("slack", "discord") if (lease := self.lease_of(p))]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.args.lease_wait):
                while not all(self.holder_of(lease) for lease in wanted):  # noqa: ASYNC110
                    await asyncio.sleep(0.2)  # the lease watcher polls the database
        self.leases_missing = [lease for lease in wanted if not self.holder_of(lease)]
        await self.world.slack.wait_for_socket(len(self.serving("slack")), timeout=60)
        print(f"t={self.now():6.1f}s running: "
              + ", ".join(f"{lease} held by {self.leases_now.get(lease)}" for lease in wanted),
              flush=True)  # fmt: skip
        if self.leases_missing:
            # Reported, not fatal: what the platforms then show is the finding.
            print(f"no instance took {', '.join(self.leases_missing)}; going on", flush=True)

    async def _drive(self) -> float:
        args = self.args
        self.fleet.sample()
        duration: float = args.seconds or args.minutes * 60
        self.traffic_start = start = self.now()
        only = set(args.faults.split(",")) if args.faults != "all" else None
        faults = asyncio.get_running_loop().create_task(self.faults.run(start, duration, only))
        self._background.append(faults)  # cancelled with the rest if the soak is stopped
        sends: set[asyncio.Task[Any]] = set()
        interval = 1.0 / args.rate
        n = 0
        while (due := start + n * interval) < start + duration:
            if (delay := due - self.now()) > 0:
                await asyncio.sleep(delay)
            task = asyncio.get_running_loop().create_task(
                self.world.send("slack" if n % 2 == 0 else "discord")
            )
            sends.add(task)
            task.add_done_callback(sends.discard)
            n += 1
            if n % max(1, int(60 * args.rate)) == 0:
                print(f"t={self.now():6.1f}s {n} mentions sent, {self.world.settle()} open",
                      flush=True)  # fmt: skip
        self.traffic_end = self.now()
        await asyncio.gather(*sends, return_exceptions=True)
        await faults
        await self.faults.wait()
        deadline = self.now() + args.settle
        while self.world.settle() and self.now() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(1.0)  # the outcomes are read from the emulators' state
        await asyncio.sleep(args.linger)  # time for a late duplicate to show
        settled_at = self.now()
        self.fleet.sample()
        self.outcomes = self.world.final_outcomes()
        self.settled_at = settled_at
        await asyncio.to_thread(self.world.dump, self.workdir, self.zero)
        return duration


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="traffic duration")
    parser.add_argument("--seconds", type=float, default=0.0, help="overrides --minutes")
    parser.add_argument("--rate", type=float, default=1.0, help="mentions per second, in all")
    parser.add_argument("--tokens", type=int, default=240, help="tokens per reply")
    parser.add_argument("--token-rate", type=float, default=24.0, help="tokens per second")
    parser.add_argument("--topology", choices=("auto", "combined", "split"), default="auto")
    parser.add_argument("--lease-seconds", type=float, default=10.0)
    parser.add_argument("--takeover-seconds", type=float, default=15.0)
    parser.add_argument(
        "--lease-wait",
        type=float,
        default=45.0,
        help="seconds to wait for the leases to be taken before the traffic",
    )
    parser.add_argument("--restart-after", type=float, default=5.0,
                        help="seconds from a kill to its replacement's start")  # fmt: skip
    parser.add_argument("--db-pause", type=float, default=5.0)
    parser.add_argument("--db-cut", type=float, default=3.0)
    parser.add_argument("--faults", default="all",
                        help="comma-separated fault names, or all: "
                        + ", ".join(sorted({name for _, name in SCHEDULE})))  # fmt: skip
    parser.add_argument("--warmup", type=float, default=60.0,
                        help="seconds after a process starts before its RSS baseline")  # fmt: skip
    parser.add_argument("--sample-every", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=120.0,
                        help="seconds after the traffic for the last replies to end")  # fmt: skip
    parser.add_argument("--linger", type=float, default=5.0)
    parser.add_argument("--postgres",
                        default=(os.environ.get("BRIDGE_TEST_POSTGRES_URL") or DEFAULT_ADMIN)
                        .replace("postgresql+asyncpg://", "postgresql://"))  # fmt: skip
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the logs and configs here (default: a temporary directory)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    import signal
    import tempfile

    # SIGINT or SIGTERM: stop the instances and drop the databases, then exit.
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)

    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return await Soak(args, args.workdir).run()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        return await Soak(args, Path(tmp)).run()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
    try:
        result = asyncio.run(main_async(args))
    except asyncio.CancelledError:
        print("soak: stopped before the end; nothing written", file=sys.stderr)
        raise SystemExit(130) from None
    result["command"] = "python -m bench.soak " + " ".join(sys.argv[1:] if argv is None else argv)
    print_table(result)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
