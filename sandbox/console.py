"""The admin console in the sandbox: on 127.0.0.1 (port 9103 when it is free), behind a password
made for this run and printed in the banner, so that its Live page shows the sandbox's replies as
they stream and its other pages what the bridge stored."""

from __future__ import annotations

import asyncio
import secrets
import socket
from dataclasses import dataclass
from typing import Any

from bridge import app

HOST = "127.0.0.1"
DEFAULT_PORT = 9103  # the console's own default: the address an admin already knows


@dataclass(frozen=True, slots=True)
class SandboxConsole:
    port: int
    password: str
    # argon2id, as `chat-bridge console-password` makes it; what the bridge's settings hold.
    password_hash: str

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def settings(self) -> dict[str, Any]:
        """The bridge's `[console]` section."""
        return {
            "enabled": True,
            "host": HOST,
            "port": self.port,
            "password_hash": self.password_hash,
        }

    def banner(self, *, interactive: bool) -> list[str]:
        lasts = (
            "open until you quit"
            if interactive
            else "it closes when the sandbox exits (-i keeps it)"
        )
        return [
            f"  console  admin console at {self.url} (password: {self.password})",
            f"           its Live page shows each reply as it streams; {lasts}",
        ]


async def new_password() -> tuple[str, str]:
    """A password for this run and its argon2id hash: argon2 takes some 50-100 ms of CPU, so in a
    thread, while the emulators start."""
    password = secrets.token_urlsafe(12)
    return password, await asyncio.to_thread(app.console_password_hash, password)


def pick_port(preferred: int, host: str = HOST) -> int:
    """`preferred` when nothing listens on it (0: no preference), else a port the OS has free.

    The probe is closed before the console listens: another program could take the port in
    between, and the bridge would then fail to start saying so, which a rerun mends.
    """
    if preferred:
        try:
            return _bound_port(host, preferred)
        except OSError:
            pass  # taken (a bridge's console, another sandbox): any free port will do
    return _bound_port(host, 0)


def _bound_port(host: str, port: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the server will: a port whose last connections linger in TIME_WAIT is still free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        return int(probe.getsockname()[1])
