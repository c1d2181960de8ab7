"""The faults of a soak, on a schedule given as fractions of the run: kill -9 of a lease holder
(and a replacement started as a supervisor would), 429 storms on both platforms, the database
paused and cut, a Discord gateway drop that discord.py resumes, a Slack stream expiring mid-reply.

Each fault is recorded with its time and what it hit; `Kill` keeps what the takeover figures
are computed from (see `bench.soak_report`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.soak import Soak

log = logging.getLogger("bench.soak")

# (fraction of the traffic's duration, fault): the first kill after the first storm, the two
# kills far enough apart that the first takeover is over, a quiet last tenth.
SCHEDULE: tuple[tuple[float, str], ...] = (
    (0.10, "slack-429-storm"),
    (0.15, "discord-429-storm"),
    (0.20, "kill-slack-holder"),
    (0.33, "db-pause"),
    (0.42, "slack-stream-expiry"),
    (0.50, "discord-gateway-drop"),
    (0.58, "kill-discord-holder"),
    (0.70, "db-cut"),
    (0.80, "slack-429-storm"),
    (0.80, "discord-429-storm"),
)

SLACK_STORM = {"chat.update": 10, "chat.postMessage": 5, "chat.appendStream": 10}
DISCORD_STORM = {
    "PATCH /channels/{channel_id}/messages/{message_id}": 15,
    "POST /channels/{channel_id}/messages": 5,
}
STORM_RETRY_AFTER = 2


@dataclass
class FaultRecord:
    name: str
    at: float  # seconds since the soak's zero
    wall: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Kill:
    platform: str
    lease: str | None  # None: the platform has no lease (Discord without [cluster])
    victim: str
    victim_pid: int
    at: float
    wall: float
    in_flight: list[str]  # platform ids of the mentions the victim was answering or had queued
    replacement: str | None = None
    owner: str | None = None  # the victim's id in the owners table
    failed_starts: list[str] = field(default_factory=list)  # replacements that exited at once
    # (platform, platform id) of the victim's mentions on its other platforms: an instance may
    # hold both platforms' leases, and a kill cuts both.
    also_cut: list[tuple[str, str]] = field(default_factory=list)


class Faults:
    def __init__(self, soak: Soak, *, db_pause: float, db_cut: float, restart_after: float):
        self.soak = soak
        self.db_pause = db_pause
        self.db_cut = db_cut
        self.restart_after = restart_after
        self.records: list[FaultRecord] = []
        self.kills: list[Kill] = []
        self._background: set[asyncio.Task[None]] = set()
        self._actions: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
            "slack-429-storm": self.slack_storm,
            "discord-429-storm": self.discord_storm,
            "kill-slack-holder": lambda: self.kill_holder("slack"),
            "kill-discord-holder": lambda: self.kill_holder("discord"),
            "db-pause": self.pause_database,
            "db-cut": self.cut_database,
            "slack-stream-expiry": self.expire_streams,
            "discord-gateway-drop": self.drop_gateway,
        }

    async def run(self, start: float, duration: float, only: set[str] | None) -> None:
        """Carry out the schedule from `start` (soak time); `only`: the faults to keep."""
        for fraction, name in SCHEDULE:
            if only is not None and name not in only:
                continue
            delay = start + fraction * duration - self.soak.now()
            if delay > 0:
                await asyncio.sleep(delay)
            at, wall = self.soak.now(), time.time()
            try:
                detail = await self._actions[name]()
            except Exception as exc:  # a fault that could not be made is reported, not fatal
                log.exception("fault %s failed", name)
                detail = {"error": repr(exc)}
            self.records.append(FaultRecord(name, at, wall, detail))
            log.warning("t=%6.1fs fault %s: %s", at, name, _brief(detail))

    async def wait(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def cancel(self) -> None:
        for task in self._background:
            task.cancel()
        await self.wait()

    # --- the faults ----------------------------------------------------------------------------

    async def slack_storm(self) -> dict[str, Any]:
        for method, count in SLACK_STORM.items():
            self.soak.world.slack.inject_429(method, count, STORM_RETRY_AFTER)
        return {"injected": SLACK_STORM, "retry_after": STORM_RETRY_AFTER}

    async def discord_storm(self) -> dict[str, Any]:
        for route, count in DISCORD_STORM.items():
            self.soak.world.discord.inject_429(route, count, float(STORM_RETRY_AFTER))
        return {"injected": DISCORD_STORM, "retry_after": STORM_RETRY_AFTER}

    async def kill_holder(self, platform: str) -> dict[str, Any]:
        soak = self.soak
        lease = soak.lease_of(platform)
        victim = soak.holder_of(lease) if lease else None
        if victim is None:
            # No lease for it (Discord without [cluster]): the instance answering the most now.
            victim = await soak.busiest(platform)
        if victim is None:
            return {"error": f"no live instance answers {platform}"}
        in_flight = await soak.in_flight(victim, platform)
        others = [p for p in ("slack", "discord") if p != platform]
        also_cut = [(p, pid) for p in others for pid in await soak.in_flight(victim, p)]
        owner = await soak.owner_of(victim)
        soak.fleet.kill(victim)
        kill = Kill(platform, lease, victim.name, victim.pid, soak.now(), time.time(), in_flight)
        kill.owner = owner
        kill.also_cut = also_cut
        self.kills.append(kill)
        self._spawn(self._replace(kill, victim))
        return {"victim": victim.name, "lease": lease, "in_flight": len(in_flight)}

    async def _replace(self, kill: Kill, victim: Any) -> None:
        """As a supervisor would (systemd `Restart=on-failure`, `RestartSec`): start one again
        after `restart_after`, and again if it exits before it runs."""
        for _attempt in range(5):
            await asyncio.sleep(self.restart_after)
            try:
                replacement = await self.soak.replace(victim)
            except RuntimeError as exc:  # it exited before running: its log says why
                kill.failed_starts.append(str(exc).splitlines()[0])
                continue
            kill.replacement = replacement.name
            return

    async def pause_database(self) -> dict[str, Any]:
        await self.soak.fleet.tell_proxy(f"pause {self.db_pause:g}")
        return {"seconds": self.db_pause, "how": "every byte held, new connections wait"}

    async def cut_database(self) -> dict[str, Any]:
        await self.soak.fleet.tell_proxy(f"cut {self.db_cut:g}")
        return {"seconds": self.db_cut, "how": "connections closed, new ones refused"}

    async def expire_streams(self, count: int = 2) -> dict[str, Any]:
        """The oldest native streams that have shown text for a while expire now."""
        world = self.soak.world
        now = self.soak.now()
        ready: list[tuple[float, tuple[str, str]]] = []
        deadline = now + 20.0
        while not ready and now < deadline:  # noqa: ASYNC110 (the world announces no streams)
            ready = sorted(
                (since, place) for place, since in world.streaming_slack.items() if now - since >= 1
            )
            if not ready:
                await asyncio.sleep(0.2)
                now = self.soak.now()
        expired, keys = [], []
        for _since, (channel, ts) in ready[:count]:
            world.slack.expire_stream(channel, ts)
            expired.append(f"{channel}/{ts}")
            keys += [a.key for a in world.asked if a.place == channel and ts in a.bot_messages]
        return {"expired": expired, "mentions": keys}

    async def drop_gateway(self) -> dict[str, Any]:
        """Every instance's gateway socket closed (4000), and no HELLO for `outage` seconds: the
        mentions meanwhile are replayed on RESUME, the replies streaming go on over REST."""
        outage = 3.0
        world = self.soak.world
        now = self.soak.now()
        streaming = [
            a.key
            for a in world.asked
            if a.platform == "discord" and a.first_text is not None
            and a.last_change is not None and now - a.last_change < 2.0
        ]  # fmt: skip
        before = world.discord.stats.resumes
        closed = await world.discord.drop_gateway(outage=outage)
        return {"sockets_closed": closed, "outage_s": outage, "resumes_before": before,
                "mentions": streaming}  # fmt: skip

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("a fault's follow-up failed")

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _brief(detail: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in detail.items())
