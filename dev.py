#!/usr/bin/env python3
"""Set up the project's virtualenv from the pinned constraints, then run a job in it.

    python3 dev.py test       ruff, mypy and the whole pytest suite (what .ci/run runs)
    python3 dev.py sandbox    the offline sandbox: the bridge against local Slack, Discord and LLM
                              (arguments go to `chat-bridge sandbox`, e.g. --interactive)

Needs only Python 3.11+; everything else comes from PyPI into .venv/.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".chat-bridge-installed"


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 (dev.py may run on an older python3)
        print("chat-bridge needs Python 3.11 or newer", file=sys.stderr)
        return 2
    job = argv[0] if argv else "test"
    if job not in JOBS:
        print(f"usage: python3 dev.py [{'|'.join(JOBS)}] [args...]", file=sys.stderr)
        return 2
    ensure_venv()
    return JOBS[job](argv[1:])


def ensure_venv() -> None:
    inputs = b"".join((ROOT / name).read_bytes() for name in ("pyproject.toml", "constraints.txt"))
    wanted = hashlib.sha256(inputs).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        print("creating .venv ...", flush=True)
        venv.create(VENV, with_pip=True)
    print("installing pinned dependencies into .venv ...", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "-c", "constraints.txt", "-e", ".[dev]"], cwd=ROOT, check=True)
    STAMP.write_text(wanted)


def run(*command: str) -> int:
    print(f"$ {' '.join(command)}", flush=True)
    return subprocess.run(command, cwd=ROOT).returncode


def test(extra: list[str]) -> int:
    steps = [
        (str(BIN / "ruff"), "check", "."),
        (str(BIN / "ruff"), "format", "--check", "."),
        (str(BIN / "mypy"),),
        # Three workers, each test file on one of them: most tests wait on sockets and rate
        # windows (a Discord channel's 5 writes per 5 s), so on a two-core machine two workers
        # kept about one core busy (10.4 min of CPU in 10.7 min); three use the second one.
        # `-n 0` in `extra` runs them in one process.
        (str(BIN / "python"), "-m", "pytest", "-n", "3", "--dist", "loadfile", *extra),
    ]
    failed = [" ".join(step[:2]) for step in steps if run(*step) != 0]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def sandbox(extra: list[str]) -> int:
    return run(str(BIN / "chat-bridge"), "sandbox", *extra)


JOBS = {"test": test, "sandbox": sandbox}

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
