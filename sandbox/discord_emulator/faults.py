"""Server errors injected into REST answers: Discord failing before a request took effect, or after.

The second kind is the one bots get wrong. discord.py re-sends a request answered 500, 502, 504 or
524 by itself, so a message create that Discord performed before failing is sent again, and only
the create's `nonce` with `enforce_nonce` keeps the retry from posting the message twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .api import ApiReply

_REASONS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(frozen=True, slots=True)
class ServerFault:
    status: int
    applied: bool  # the request took effect before the error was answered

    def reply(self) -> ApiReply:
        reason = _REASONS.get(self.status, "Server Error")
        return ApiReply(self.status, {"message": f"{self.status}: {reason}", "code": 0})


@dataclass
class _Injection:
    route: str
    major: str | None
    remaining: int
    fault: ServerFault


@dataclass
class ServerFaults:
    """Faults waiting for the requests they were injected for, oldest injection first."""

    _injections: list[_Injection] = field(default_factory=list)

    def inject(
        self, route: str, count: int, status: int, *, major: str | None, applied: bool
    ) -> None:
        if not 500 <= status <= 599:
            raise ValueError(f"a server error is a 5xx status, not {status}")
        if count < 1:
            raise ValueError("inject at least one fault")
        self._injections.append(_Injection(route, major, count, ServerFault(status, applied)))

    def take(self, route: str, major: str) -> ServerFault | None:
        """The fault the next request on `route` with this major parameter meets, if any."""
        for injection in self._injections:
            if injection.route == route and injection.major in (None, major):
                injection.remaining -= 1
                if injection.remaining <= 0:
                    self._injections.remove(injection)
                return injection.fault
        return None
