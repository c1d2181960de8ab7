"""REST routes on channels: messages (create, edit, read, delete), typing, threads, channel edits.

Every change goes through the world and is dispatched through the feed, so the bot also sees
its own messages and edits on the gateway, as it does on Discord.
"""

from __future__ import annotations

from . import message_forms
from .api import NO_CONTENT, ApiError, ApiReply, ApiRequest, Context, RouteSpec
from .dispatches import content_guarded
from .model import PRIVATE_THREAD, PUBLIC_THREAD, TEXT_CHANNEL, Channel, Json, StoredMessage
from .records import TypingEvent

ARCHIVE_DURATIONS = (60, 1440, 4320, 10080)
NONCE_LIMIT = 25  # characters of a string nonce
_MESSAGES = "/channels/{channel_id}/messages"
_MESSAGE = "/channels/{channel_id}/messages/{message_id}"


class ChannelRoutes:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.world = ctx.world

    def specs(self) -> list[RouteSpec]:
        return [
            RouteSpec("GET", "/channels/{channel_id}", self.get_channel),
            RouteSpec("PATCH", "/channels/{channel_id}", self.edit_channel),
            RouteSpec("GET", _MESSAGES, self.list_messages),
            RouteSpec("POST", _MESSAGES, self.create_message),
            RouteSpec("GET", _MESSAGE, self.get_message),
            RouteSpec("PATCH", _MESSAGE, self.edit_message),
            RouteSpec("DELETE", _MESSAGE, self.delete_message),
            RouteSpec("POST", "/channels/{channel_id}/typing", self.typing),
            RouteSpec("POST", _MESSAGE + "/threads", self.thread_from_message),
            RouteSpec("POST", "/channels/{channel_id}/threads", self.thread_without_message),
        ]

    def _visible(self, message: StoredMessage) -> Json:
        # REST hides content like the gateway does when the app lacks the privileged intent.
        granted = self.world.application.message_content_intent
        redact = not granted and content_guarded(self.world, message)
        return self.ctx.wire.message(message, redact=redact, members=False)

    async def get_channel(self, request: ApiRequest) -> ApiReply:
        return ApiReply(200, self.ctx.wire.channel(self.ctx.channel(request)))

    async def edit_channel(self, request: ApiRequest) -> ApiReply:
        channel = self.ctx.channel(request)
        body = request.body()
        if "name" in body:
            channel.name = _thread_name(body.get("name"))
        if "auto_archive_duration" in body:
            channel.auto_archive_duration = _archive_duration(body)
        if "name" in body:
            self.world.notify("thread" if channel.is_thread else "channel", channel.id)
        if channel.is_thread:
            await self.ctx.feed.thread_updated(channel)
        return ApiReply(200, self.ctx.wire.channel(channel))

    async def list_messages(self, request: ApiRequest) -> ApiReply:
        channel = self.ctx.channel(request)
        limit = int(request.query.get("limit", "50"))
        if not 1 <= limit <= 100:
            message = "int value should be <= 100 and >= 1."
            raise ApiError.invalid_form("limit", "NUMBER_TYPE_MAX", message)
        newest_first = sorted(self.world.messages(channel.id), key=lambda m: m.id, reverse=True)
        if "before" in request.query:
            before = int(request.query["before"])
            newest_first = [m for m in newest_first if m.id < before]
        if "after" in request.query:
            after = int(request.query["after"])
            # Discord pages forwards from `after`: the oldest `limit` messages newer than it.
            newest_first = [m for m in newest_first if m.id > after][-limit:]
        if "around" in request.query:
            around = int(request.query["around"])
            older = [m for m in newest_first if m.id <= around][: (limit + 1) // 2]
            newer = [m for m in newest_first if m.id > around][-(limit // 2) :] if limit > 1 else []
            newest_first = newer + older
        return ApiReply(200, [self._visible(m) for m in newest_first[:limit]])

    async def get_message(self, request: ApiRequest) -> ApiReply:
        channel = self.ctx.channel(request)
        return ApiReply(200, self._visible(self.ctx.message(channel, request)))

    async def create_message(self, request: ApiRequest) -> ApiReply:
        channel = self.ctx.channel(request)
        body = request.body()
        form = message_forms.parse(body, request.uploads, self.world.snowflakes)
        if form.is_empty() and not body.get("sticker_ids"):
            raise message_forms.empty_message()

        nonce = _nonce(body)
        if nonce is not None and body.get("enforce_nonce"):
            # A repeat of a create (a retry after a lost answer) gets the message it made.
            existing = self.world.message_by_nonce(channel.id, self.world.bot.id, nonce)
            if existing is not None and existing.deleted:
                raise ApiError.unknown("Message")  # discord.py documents this NotFound
            if existing is not None:
                return ApiReply(200, self.ctx.wire.message(existing))

        reply_to, reference = self._reference(channel, body.get("message_reference"))
        message = self.world.post_message(
            channel,
            self.world.bot.id,
            form.content or "",
            embeds=form.embeds,
            attachments=form.new_attachments,
            components=form.components,
            allowed_mentions=form.allowed_mentions,
            reply_to=reply_to,
            reference=reference,
            nonce=nonce,
            flags=form.flags or 0,
        )
        await self.ctx.feed.message_created(message)
        return ApiReply(200, self.ctx.wire.message(message))

    def _reference(
        self, channel: Channel, raw: Json | None
    ) -> tuple[StoredMessage | None, Json | None]:
        if not raw:
            return None, None
        channel_id = int(raw.get("channel_id") or channel.id)
        target = self.world.message(channel_id, int(raw.get("message_id") or 0))
        if target is None:
            if raw.get("fail_if_not_exists", True):
                raise ApiError.invalid_form(
                    "message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message"
                )
            return None, None
        reference: Json = {
            "type": 0,
            "channel_id": str(target.channel_id),
            "message_id": str(target.id),
        }
        if target.guild_id is not None:
            reference["guild_id"] = str(target.guild_id)
        return target, reference

    async def edit_message(self, request: ApiRequest) -> ApiReply:
        channel = self.ctx.channel(request)
        message = self.ctx.message(channel, request)
        if message.author_id != self.world.bot.id:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        form = message_forms.parse(request.body(), request.uploads, self.world.snowflakes)
        attachments = form.attachments_after(message.attachments)
        content = message.content if form.content is None else form.content
        embeds = message.embeds if form.embeds is None else form.embeds
        components = message.components if form.components is None else form.components
        if not (content or embeds or attachments or components):
            raise message_forms.empty_message()
        message.attachments = attachments
        self.world.edit_message(
            message,
            content=form.content,
            embeds=form.embeds,
            components=form.components,
            allowed_mentions=form.allowed_mentions,
            flags=form.flags,
        )
        await self.ctx.feed.message_updated(message)
        return ApiReply(200, self.ctx.wire.message(message))

    async def delete_message(self, request: ApiRequest) -> ApiReply:
        channel = self.ctx.channel(request)
        message = self.ctx.message(channel, request)
        if message.author_id != self.world.bot.id:
            # Deleting others' messages needs MANAGE_MESSAGES, which the bot's role lacks.
            raise ApiError(403, 50013, "Missing Permissions")
        self.world.delete_message(message)
        await self.ctx.feed.message_deleted(message)
        return NO_CONTENT

    async def typing(self, request: ApiRequest) -> ApiReply:
        channel = self.ctx.channel(request)
        self.ctx.typing.append(TypingEvent(channel.id, self.world.clock()))
        self.world.notify("typing", channel.id)
        return NO_CONTENT

    async def thread_from_message(self, request: ApiRequest) -> ApiReply:
        channel = self.ctx.channel(request)
        starter = self.ctx.message(channel, request)
        if channel.type != TEXT_CHANNEL:
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        if starter.id in self.world.channels:
            raise ApiError(400, 160004, "A thread has already been created for this message")
        body = request.body()
        thread = self.world.start_thread(
            channel,
            _thread_name(body.get("name")),
            owner_id=self.world.bot.id,
            starter=starter,
            auto_archive_duration=_archive_duration(body),
        )
        await self.ctx.feed.thread_created(thread)
        return ApiReply(201, self.ctx.wire.thread(thread))

    async def thread_without_message(self, request: ApiRequest) -> ApiReply:
        channel = self.ctx.channel(request)
        if channel.type != TEXT_CHANNEL:
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        body = request.body()
        thread_type = int(body.get("type", PRIVATE_THREAD))
        if thread_type not in (PUBLIC_THREAD, PRIVATE_THREAD):
            raise ApiError.bad_choice("type", (PUBLIC_THREAD, PRIVATE_THREAD))
        thread = self.world.start_thread(
            channel,
            _thread_name(body.get("name")),
            owner_id=self.world.bot.id,
            starter=None,
            auto_archive_duration=_archive_duration(body),
            thread_type=thread_type,
        )
        await self.ctx.feed.thread_created(thread)
        return ApiReply(201, self.ctx.wire.thread(thread))


def _nonce(body: Json) -> str | int | None:
    nonce = body.get("nonce")
    if nonce is None or (isinstance(nonce, int) and not isinstance(nonce, bool)):
        return nonce
    nonce = str(nonce)
    if len(nonce) > NONCE_LIMIT:
        raise ApiError.too_long("nonce", NONCE_LIMIT)
    return nonce


def _thread_name(name: object) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= 100:
        raise ApiError.bad_length("name", 1, 100)
    return name


def _archive_duration(body: Json) -> int:
    duration = body.get("auto_archive_duration")
    if duration is None:
        return 1440
    if duration not in ARCHIVE_DURATIONS:
        raise ApiError.bad_choice("auto_archive_duration", ARCHIVE_DURATIONS)
    return int(duration)
