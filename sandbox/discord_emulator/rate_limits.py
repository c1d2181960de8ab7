"""Discord's REST rate limits: per-route buckets keyed by major parameter, plus a global limit.

Every admitted request gets the real `X-RateLimit-*` headers so discord.py paces itself from them;
a request that finds its bucket empty is a violation and gets a 429 that discord.py accepts.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Scope = Literal["user", "global", "shared"]


@dataclass(frozen=True, slots=True)
class BucketRule:
    limit: int
    per: float


# Discord documents no numbers; these are the ones bots observe on the message routes.
DEFAULT_ROUTE_RULES: dict[str, BucketRule] = {
    "POST /channels/{channel_id}/messages": BucketRule(5, 5.0),
    "PATCH /channels/{channel_id}/messages/{message_id}": BucketRule(5, 5.0),
    "DELETE /channels/{channel_id}/messages/{message_id}": BucketRule(5, 1.0),
    "POST /channels/{channel_id}/typing": BucketRule(5, 5.0),
    "POST /channels/{channel_id}/messages/{message_id}/threads": BucketRule(10, 10.0),
    "PATCH /channels/{channel_id}": BucketRule(2, 600.0),
}
DEFAULT_RULE = BucketRule(50, 1.0)
GLOBAL_RULE = BucketRule(50, 1.0)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a request may proceed, and the headers (and 429 body) its response carries."""

    admitted: bool
    headers: dict[str, str]
    body: dict[str, Any] | None = None
    violation: str | None = None  # the bucket that was found empty: a route key or "global"


@dataclass
class _Window:
    reset_at: float
    remaining: int


@dataclass
class _Injection:
    route: str
    major: str | None
    remaining: int
    retry_after: float
    scope: Scope


@dataclass
class RateLimiter:
    clock: Callable[[], float]
    wall_clock: Callable[[], float]
    rules: dict[str, BucketRule] = field(default_factory=lambda: dict(DEFAULT_ROUTE_RULES))
    default_rule: BucketRule = DEFAULT_RULE
    global_rule: BucketRule | None = GLOBAL_RULE
    _windows: dict[tuple[str, str], _Window] = field(default_factory=dict)
    _global: _Window | None = None
    _injections: list[_Injection] = field(default_factory=list)

    def set_bucket(self, route: str, limit: int, per: float) -> None:
        self.rules[route] = BucketRule(limit, per)
        # A new rule starts with a fresh window, as if the limit had just been deployed.
        for key in [k for k in self._windows if k[0] == route]:
            del self._windows[key]

    def inject(
        self,
        route: str,
        count: int,
        retry_after: float,
        *,
        major: str | None = None,
        scope: Scope = "user",
    ) -> None:
        self._injections.append(_Injection(route, major, count, retry_after, scope))

    def check(self, route: str, major: str, *, global_exempt: bool = False) -> Verdict:
        now = self.clock()
        rule = self.rules.get(route, self.default_rule)
        injected = self._take_injection(route, major)
        if injected is not None:
            headers = self._headers(route, rule, 0, injected.retry_after)
            return self._too_many(headers, injected.retry_after, injected.scope, violation=None)

        if self.global_rule is not None and not global_exempt:
            window = self._global = self._advance(self._global, self.global_rule, now)
            if window.remaining <= 0:
                retry = window.reset_at - now
                headers = {"X-RateLimit-Global": "true"}
                return self._too_many(headers, retry, "global", violation="global")
            window.remaining -= 1

        key = (route, major)
        window = self._windows[key] = self._advance(self._windows.get(key), rule, now)
        reset_after = window.reset_at - now
        if window.remaining <= 0:
            headers = self._headers(route, rule, 0, reset_after)
            return self._too_many(headers, reset_after, "user", violation=route)
        window.remaining -= 1
        return Verdict(True, self._headers(route, rule, window.remaining, reset_after))

    def _take_injection(self, route: str, major: str) -> _Injection | None:
        for injection in self._injections:
            if injection.route == route and injection.major in (None, major):
                injection.remaining -= 1
                if injection.remaining <= 0:
                    self._injections.remove(injection)
                return injection
        return None

    @staticmethod
    def _advance(window: _Window | None, rule: BucketRule, now: float) -> _Window:
        if window is None or now >= window.reset_at:
            return _Window(now + rule.per, rule.limit)
        return window

    def _headers(
        self, route: str, rule: BucketRule, remaining: int, reset_after: float
    ) -> dict[str, str]:
        # Rounded up: a client that waits exactly Reset-After must find the window reset.
        reset_after = math.ceil(max(reset_after, 0.0) * 1000) / 1000
        return {
            "X-RateLimit-Limit": str(rule.limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{self.wall_clock() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": bucket_hash(route),
        }

    @staticmethod
    def _too_many(
        headers: dict[str, str], retry_after: float, scope: Scope, *, violation: str | None
    ) -> Verdict:
        retry_after = math.ceil(max(retry_after, 0.0) * 1000) / 1000
        headers = {
            **headers,
            "Retry-After": str(math.ceil(retry_after)),
            "X-RateLimit-Scope": scope,
        }
        body = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": scope == "global",
        }
        return Verdict(False, headers, body, violation)


def bucket_hash(route: str) -> str:
    """A stable opaque id per route, like the hashes Discord sends in X-RateLimit-Bucket."""
    return hashlib.sha256(route.encode()).hexdigest()[:32]
