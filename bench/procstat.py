"""CPU time and memory of another process, read from /proc (Linux), for the measured bot alone."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ProcessSample:
    cpu_s: float  # utime + stime of every thread of the process
    rss_mb: float  # VmRSS now
    peak_rss_mb: float  # VmHWM: the high-water mark of the resident set since start


def sample(pid: int) -> ProcessSample:
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may contain spaces; the fields after its ")" are fixed.
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    memory = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            memory[name] = int(value.split()[0]) / 1024
    return ProcessSample(
        cpu_s=(utime + stime) / _TICKS,
        rss_mb=memory.get("VmRSS", 0.0),
        peak_rss_mb=memory.get("VmHWM", 0.0),
    )
