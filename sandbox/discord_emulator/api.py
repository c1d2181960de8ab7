"""The shapes REST handlers share: the parsed request, the reply, Discord's error bodies, routes.

Handlers stay free of aiohttp: `rest` does the HTTP, auth, rate limiting and recording around them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .dispatches import EventFeed
from .model import Channel, Json, StoredMessage
from .records import TypingEvent
from .wire import Wire
from .world import World


@dataclass(frozen=True, slots=True)
class Upload:
    field_name: str
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class ApiRequest:
    method: str
    route: str
    params: Mapping[str, str]
    query: Mapping[str, str]
    json: Any
    uploads: tuple[Upload, ...] = ()

    def snowflake(self, name: str) -> int:
        raw = self.params[name]
        if not raw.isdigit():
            raise ApiError.invalid_form(
                name, "NUMBER_TYPE_COERCE", f'Value "{raw}" is not snowflake.'
            )
        return int(raw)

    def body(self) -> Json:
        if not isinstance(self.json, dict):
            raise ApiError(400, 50109, "The request body contains invalid JSON.")
        return self.json


@dataclass(frozen=True, slots=True)
class ApiReply:
    status: int = 200
    body: Any = None  # JSON-able; ignored for 204


NO_CONTENT = ApiReply(204)


class ApiError(Exception):
    """An error the way Discord reports it: `{"message", "code", "errors"?}`."""

    def __init__(self, status: int, code: int, message: str, errors: Json | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body: Json = {"message": message, "code": code}
        if errors is not None:
            self.body["errors"] = errors

    @classmethod
    def invalid_form(cls, path: str, code: str, message: str) -> ApiError:
        """A 50035 with one error at a dotted path, e.g. ``embeds.0.description``."""
        tree: Json = {"_errors": [{"code": code, "message": message}]}
        for part in reversed(path.split(".")):
            tree = {part: tree}
        return cls(400, 50035, "Invalid Form Body", tree)

    @classmethod
    def invalid_form_tree(cls, errors: Json) -> ApiError:
        return cls(400, 50035, "Invalid Form Body", errors)

    @classmethod
    def too_long(cls, path: str, limit: int) -> ApiError:
        message = f"Must be {limit} or fewer in length."
        return cls.invalid_form(path, "BASE_TYPE_MAX_LENGTH", message)

    @classmethod
    def bad_length(cls, path: str, low: int, high: int) -> ApiError:
        message = f"Must be between {low} and {high} in length."
        return cls.invalid_form(path, "BASE_TYPE_BAD_LENGTH", message)

    @classmethod
    def bad_choice(cls, path: str, choices: tuple[int, ...]) -> ApiError:
        message = f"Value must be one of {choices}."
        return cls.invalid_form(path, "BASE_TYPE_CHOICES", message)

    @classmethod
    def unknown(cls, what: str) -> ApiError:
        codes = {
            "Channel": 10003,
            "Guild": 10004,
            "Member": 10007,
            "Message": 10008,
            "User": 10013,
            "Webhook": 10015,
            "Application": 10002,
            "Interaction": 10062,
            "Command": 10063,
        }
        return cls(404, codes[what], f"Unknown {what}")


Handler = Callable[[ApiRequest], Awaitable[ApiReply]]


@dataclass(frozen=True, slots=True)
class RouteSpec:
    method: str
    path: str  # a Discord route template, as discord.py's Route.path spells it
    handler: Handler
    auth: bool = True  # webhook and interaction routes authenticate by the token in the path


@dataclass
class Context:
    """What handlers work on; one per emulator."""

    world: World
    wire: Wire
    feed: EventFeed
    typing: list[TypingEvent] = field(default_factory=list)
    interaction_ack_timeout: float = 3.0

    def channel(self, request: ApiRequest, name: str = "channel_id") -> Channel:
        channel = self.world.channels.get(request.snowflake(name))
        if channel is None:
            raise ApiError.unknown("Channel")
        return channel

    def message(self, channel: Channel, request: ApiRequest) -> StoredMessage:
        message = self.world.message(channel.id, request.snowflake("message_id"))
        if message is None:
            raise ApiError.unknown("Message")
        return message
