"""Console sessions: a cookie signed with HMAC-SHA256 under a key made when the console starts,
so every session ends when the bridge restarts; nothing about a session is stored but the ids of
those that logged out before they expired.

The cookie is `<id>.<expires>.<signature>`. The id is random and not secret (the logs name the
session by it); without the key nobody can sign another id or a later expiry. A session's CSRF
token is derived from its id under the same key, so a form's token is checked without storage.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "chat_bridge_console"
# Before login: a random nonce whose HMAC is the login form's CSRF token.
LOGIN_COOKIE = "chat_bridge_console_login"


@dataclass(frozen=True, slots=True)
class Session:
    id: str  # short, random, not secret: what the logs say
    expires: float  # Unix time
    csrf: str


class Sessions:
    def __init__(self, *, lifetime: float, clock: Callable[[], float] = time.time) -> None:
        self._key = secrets.token_bytes(32)
        self._lifetime = lifetime
        self._clock = clock
        self._ended: dict[str, float] = {}  # logged out: id -> when it would have expired

    @property
    def lifetime(self) -> float:
        return self._lifetime

    def begin(self) -> tuple[Session, str]:
        """A new session and its cookie value."""
        session_id = secrets.token_hex(6)
        expires = int(self._clock() + self._lifetime)
        payload = f"{session_id}.{expires}"
        return self._session(session_id, expires), f"{payload}.{self._sign(payload)}"

    def read(self, cookie: str | None) -> Session | None:
        """The session a cookie stands for; None if it is forged, expired or logged out."""
        if not cookie or cookie.count(".") != 2:
            return None
        session_id, expires_text, signature = cookie.split(".")
        payload = f"{session_id}.{expires_text}"
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            return None
        session = self._session(session_id, int(expires_text))
        return session if self.active(session) else None

    def active(self, session: Session) -> bool:
        """Whether a session still stands (not expired, not logged out): checked when a cookie
        is read, and again as an open stream goes on, so that a logout in another tab ends it."""
        return session.expires > self._clock() and session.id not in self._ended

    def end(self, session: Session) -> None:
        now = self._clock()
        self._ended = {sid: until for sid, until in self._ended.items() if until > now}
        self._ended[session.id] = session.expires

    def login_nonce(self) -> str:
        return secrets.token_hex(16)

    def login_token(self, nonce: str) -> str:
        return self._sign(f"login.{nonce}")

    def _session(self, session_id: str, expires: float) -> Session:
        return Session(session_id, expires, self._sign(f"csrf.{session_id}"))

    def _sign(self, payload: str) -> str:
        digest = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def same_token(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
