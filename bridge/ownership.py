"""Which process owns a message, and when another process is dead so its messages can be taken.

Every process registers an owner row with its host and pid and beats a heartbeat into it. Another
process is dead when it said it stopped, when it ran on this host (same host name and pid
namespace) and its pid is gone or is now ours, or when its heartbeat is older than
`owner_timeout`. The first two make a restart recover a crashed process's replies at once,
whatever their age; the third covers other hosts, and containers: a restarted container has a new
pid namespace, so what its previous run left is recovered once that run's heartbeat is stale.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from bridge.ports import OwnerRecord

# Owner ids of the stores alive in this process (tests and benchmarks run several bridges in one).
_LIVE_HERE: set[str] = set()


def this_host() -> str:
    """The host name, and the pid namespace where there is one: two containers may share a host
    name (host networking) while each has its own pid 1."""
    name = socket.gethostname()
    try:
        return f"{name}/pidns:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return name


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OSError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Liveness:
    owner: str
    host: str
    pid: int
    owner_timeout: float
    # Process runs known dead otherwise (`[cluster]`: this instance took a lease they held and
    # did not renew for a whole term).
    known_dead: Collection[str] = ()

    @classmethod
    def of_this_process(
        cls, owner: str, owner_timeout: float, known_dead: Collection[str] = ()
    ) -> Liveness:
        return cls(owner, this_host(), os.getpid(), owner_timeout, known_dead)

    def started(self) -> None:
        _LIVE_HERE.add(self.owner)

    def stopped(self) -> None:
        _LIVE_HERE.discard(self.owner)

    def is_dead(self, record: OwnerRecord, now: datetime) -> bool:
        if record.id == self.owner or record.id in _LIVE_HERE:
            return False
        if record.stopped_at is not None or record.id in self.known_dead:
            return True
        if record.host == self.host and (record.pid == self.pid or not pid_alive(record.pid)):
            return True
        return (now - record.heartbeat_at).total_seconds() > self.owner_timeout
