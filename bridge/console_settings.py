"""The `[console]` section: the admin console's address, its password hash and how long a login
lasts; what `check` refuses about it, warns about, and says of it."""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

# The PHC string argon2-cffi writes and verifies: $argon2id$v=19$m=65536,t=3,p=4$salt$hash.
ARGON2_HASH = re.compile(
    r"^\$argon2(id|i|d)\$(v=\d+\$)?m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]+={0,2}$"
)
LOCAL_NAMES = ("localhost",)


class ConsoleSettings(BaseModel):
    """The admin console (docs/console.md): off unless asked for, this machine only by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=9103, ge=1, le=65535)
    # Made by `chat-bridge console-password`; the password itself is never stored.
    password_hash: SecretStr | None = None
    # A login lasts this long (and ends when the bridge restarts).
    session_hours: float = Field(default=12.0, gt=0, le=24 * 365)

    @model_validator(mode="after")
    def _hash_when_enabled(self) -> ConsoleSettings:
        if self.enabled and self.password_hash is None:
            raise ValueError(
                "password_hash: required when console.enabled is true; make one with "
                "`chat-bridge console-password`"
            )
        if self.password_hash is not None and not is_argon2_hash(
            self.password_hash.get_secret_value()
        ):
            raise ValueError(
                "password_hash: not an argon2 hash (it starts with $argon2id$); make one with "
                "`chat-bridge console-password`"
            )
        return self

    @property
    def local_only(self) -> bool:
        """Whether the console listens on this machine's loopback only."""
        if self.host.lower() in LOCAL_NAMES:
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return False


def is_argon2_hash(text: str) -> bool:
    return ARGON2_HASH.match(text.strip()) is not None


def console_warnings(console: ConsoleSettings) -> list[str]:
    """What `check` warns about: allowed, but unsafe without something else in front."""
    if not console.enabled or console.local_only:
        return []
    return [
        f"console.host: {console.host!r} is reachable from other machines; the console sends its "
        "password and session cookie in clear unless it is behind a reverse proxy with TLS "
        "(see docs/console.md)"
    ]


def console_summary(console: ConsoleSettings) -> list[str]:
    """`check`'s line for the console: where it listens, never the hash."""
    if not console.enabled:
        return []
    host = f"[{console.host}]" if ":" in console.host else console.host
    return [
        f"console: http://{host}:{console.port}/ (password_hash set, sessions last "
        f"{console.session_hours:g}h)"
    ]
