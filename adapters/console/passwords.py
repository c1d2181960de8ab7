"""The console's password: hashed with argon2id (argon2-cffi) by `chat-bridge console-password`,
checked at login. Only the hash is ever kept; the password is never logged or stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# argon2-cffi's defaults: RFC 9106's second recommended profile (64 MiB, 3 passes, 4 lanes).
_HASHER = PasswordHasher()


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


FAILURE_DELAY = 0.5


class PasswordCheck:
    """Checks one password against the configured hash, one check at a time: each takes 64 MiB
    and some 50 ms of CPU, so guesses sent at once queue instead of exhausting the host. A wrong
    one holds the turn for `failure_delay` seconds: two guesses a second at most, however sent."""

    def __init__(
        self,
        password_hash: str,
        *,
        failure_delay: float = FAILURE_DELAY,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._hash = password_hash
        self._turn = asyncio.Lock()
        self._failure_delay = failure_delay
        self._sleep = sleep

    async def matches(self, password: str) -> bool:
        async with self._turn:
            right = await asyncio.to_thread(self._verify, password)
            if not right:
                await self._sleep(self._failure_delay)
            return right

    def _verify(self, password: str) -> bool:
        try:
            # argon2's own comparison of the derived keys is constant-time.
            return _HASHER.verify(self._hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
