"""How Web API arguments arrive (query string, form body, JSON body) and how a method rejects them.

Slack merges all three sources; the SDK sends some methods as JSON and others as query strings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox.slack_emulator.emulator import SlackEmulator


class ApiError(Exception):
    """An `{"ok": false, "error": ...}` answer (HTTP 200, like Slack)."""

    def __init__(self, error: str, *, messages: list[str] | None = None, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra
        if messages:
            self.extra["response_metadata"] = {"messages": messages}

    def to_response(self) -> dict[str, Any]:
        return {"ok": False, "error": self.error, **self.extra}


def merge_arguments(
    query: Mapping[str, str], form: Mapping[str, Any] | None, body: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Query first, bodies on top; JSON nulls are dropped (the SDK sends them for unset options)."""
    merged: dict[str, Any] = dict(query)
    for source in (form, body):
        if source:
            merged.update(source)
    return {key: value for key, value in merged.items() if value is not None}


class Args:
    """Typed access to one call's merged arguments."""

    __slots__ = ("raw",)

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw

    def __contains__(self, key: str) -> bool:
        return key in self.raw

    def text(self, key: str, default: str = "") -> str:
        value = self.raw.get(key)
        if value is None:
            return default
        if isinstance(value, str):
            return value
        return json.dumps(value) if isinstance(value, (list, dict)) else str(value)

    def required(self, key: str, error: str = "invalid_arguments") -> str:
        value = self.text(key)
        if not value:
            raise ApiError(error, messages=[f"[ERROR] missing required field: {key}"])
        return value

    def integer(self, key: str, default: int) -> int:
        value = self.raw.get(key)
        if value in (None, ""):
            return default
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ApiError(
                "invalid_arguments", messages=[f"[ERROR] {key} must be an integer"]
            ) from None

    def json_list(self, key: str, *, error: str = "invalid_arguments") -> list[Any] | None:
        """A list argument; form and query bodies carry it as a JSON string."""
        value = self.raw.get(key)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ApiError(error, messages=[f"[ERROR] {key} is not valid JSON"]) from None
        if not isinstance(value, list):
            raise ApiError(error, messages=[f"[ERROR] {key} must be an array"])
        return value

    def json_object(self, key: str) -> dict[str, Any] | None:
        value = self.raw.get(key)
        if isinstance(value, str) and value:
            try:
                value = json.loads(value)
            except ValueError:
                raise ApiError("invalid_metadata_format") from None
        return value if isinstance(value, dict) else None


Handler = Callable[["SlackEmulator", Args], dict[str, Any]]
"""A Web API method: returns the fields added to `{"ok": true}` or raises ApiError."""
