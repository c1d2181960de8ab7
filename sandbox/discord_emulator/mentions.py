"""Who a message pings: Discord parses `<@id>`, `<@&id>`, @everyone, filtered by allowed_mentions.

Kept apart because it is the rule bots most often get wrong (an edit without allowed_mentions
parses again with the defaults), and tests assert on its outcome.
"""

from __future__ import annotations

import re
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

_USER = re.compile(r"<@!?(\d{1,21})>")
_ROLE = re.compile(r"<@&(\d{1,21})>")
_EVERYONE = re.compile(r"@(?:everyone|here)\b")
_PARSE_TYPES = frozenset({"users", "roles", "everyone"})


@dataclass(frozen=True, slots=True)
class Mentions:
    users: tuple[int, ...]
    roles: tuple[int, ...]
    everyone: bool


def mentioned_user_ids(content: str) -> list[int]:
    """User ids written as mentions, in order, without duplicates."""
    return list(dict.fromkeys(int(m) for m in _USER.findall(content)))


def pings_replied_author(allowed: dict[str, Any] | None) -> bool:
    """Whether a new reply pings the replied-to author: yes, unless allowed_mentions says not."""
    return allowed is None or bool(allowed.get("replied_user", False))


def resolve(
    content: str,
    allowed: dict[str, Any] | None,
    *,
    known_users: Container[int],
    replied_author: int | None = None,
) -> Mentions:
    """The pings of `content` under `allowed` (None: the field was absent, so parse all).

    `replied_author` is added when given: whether a reply pings is settled when it is created.
    """
    if allowed is None:
        parse: frozenset[str] = _PARSE_TYPES
        allowed_users: set[int] = set()
        allowed_roles: set[int] = set()
    else:
        parse = frozenset(allowed.get("parse") or ())
        allowed_users = {int(u) for u in allowed.get("users") or ()}
        allowed_roles = {int(r) for r in allowed.get("roles") or ()}

    users = [
        uid
        for uid in mentioned_user_ids(content)
        if uid in known_users and ("users" in parse or uid in allowed_users)
    ]
    if replied_author is not None and replied_author not in users:
        users.append(replied_author)
    roles = [
        rid
        for rid in dict.fromkeys(int(r) for r in _ROLE.findall(content))
        if "roles" in parse or rid in allowed_roles
    ]
    everyone = "everyone" in parse and _EVERYONE.search(content) is not None
    return Mentions(tuple(users), tuple(roles), everyone)


def allowed_mentions_errors(allowed: Any) -> dict[str, Any] | None:
    """Discord's 50035 `errors` tree for an invalid allowed_mentions object, or None if valid."""
    if not isinstance(allowed, dict):
        return _error("DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
    parse = allowed.get("parse") or []
    unknown = [p for p in parse if p not in _PARSE_TYPES]
    if unknown:
        message = f'Value "{unknown[0]}" is not a valid enum value.'
        return {"parse": _error("ENUM_TYPE_COERCE", message)}
    for kind in ("users", "roles"):
        if kind in parse and allowed.get(kind):
            message = f'parse:["{kind}"] and {kind}: [ids...] are mutually exclusive.'
            return _error("MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE", message)
    return None


def _error(code: str, message: str) -> dict[str, Any]:
    return {"_errors": [{"code": code, "message": message}]}
