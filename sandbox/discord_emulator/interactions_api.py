"""REST routes for application commands and interaction responses (callback and webhook follow-ups).

Interaction routes authenticate by the token in the path and must be answered within the
3-second acknowledgement window, as on Discord. A click on a button (MESSAGE_COMPONENT) may also
be answered with 6 (acknowledged, nothing shown) or 7 (the button's message edited).
"""

from __future__ import annotations

import re

from . import message_forms
from .api import NO_CONTENT, ApiError, ApiReply, ApiRequest, Context, RouteSpec
from .invocation import SUB_COMMAND, SUB_COMMAND_GROUP
from .model import EPHEMERAL, LOADING, MESSAGE_COMPONENT, Interaction, Json, StoredMessage

_NAME = re.compile(r"^[-_'\w]{1,32}$")
_COMMANDS = "/applications/{application_id}/commands"
_GUILD_COMMANDS = "/applications/{application_id}/guilds/{guild_id}/commands"
_WEBHOOK = "/webhooks/{webhook_id}/{webhook_token}"
_CALLBACK = "/interactions/{webhook_id}/{webhook_token}/callback"

CHANNEL_MESSAGE = 4
DEFERRED_CHANNEL_MESSAGE = 5
DEFERRED_UPDATE_MESSAGE = 6  # a click acknowledged; the message may be edited later
UPDATE_MESSAGE = 7  # a click answered by editing the message the button is on
CALLBACK_TYPES = (1, 4, 5, 6, 7, 8, 9, 10, 12)
# 6 and 7 concern the message a component is on: a slash command has none.
COMMAND_CALLBACK_TYPES = (1, 4, 5, 8, 9, 10, 12)


class InteractionRoutes:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.world = ctx.world

    def specs(self) -> list[RouteSpec]:
        return [
            RouteSpec("GET", _COMMANDS, self.get_commands),
            RouteSpec("PUT", _COMMANDS, self.put_commands),
            RouteSpec("GET", _GUILD_COMMANDS, self.get_commands),
            RouteSpec("PUT", _GUILD_COMMANDS, self.put_commands),
            RouteSpec("POST", _CALLBACK, self.callback, auth=False),
            RouteSpec("POST", _WEBHOOK, self.followup, auth=False),
            # The literal @original must be registered before the {message_id} pattern.
            *(
                RouteSpec(method, _WEBHOOK + "/messages" + tail, handler, auth=False)
                for tail in ("/@original", "/{message_id}")
                for method, handler in (
                    ("GET", self.get_webhook_message),
                    ("PATCH", self.edit_webhook_message),
                    ("DELETE", self.delete_webhook_message),
                )
            ),
        ]

    # --- application commands ----------------------------------------------------------------

    def _scope(self, request: ApiRequest) -> int | None:
        if request.snowflake("application_id") != self.world.application.id:
            raise ApiError(403, 50001, "Missing Access")
        if "guild_id" not in request.params:
            return None
        guild_id = request.snowflake("guild_id")
        if guild_id not in self.world.guilds:
            raise ApiError.unknown("Guild")
        return guild_id

    async def get_commands(self, request: ApiRequest) -> ApiReply:
        scope = self._scope(request)
        return ApiReply(200, [self.ctx.wire.command(c) for c in self.world.commands_for(scope)])

    async def put_commands(self, request: ApiRequest) -> ApiReply:
        scope = self._scope(request)
        payloads = request.json
        if not isinstance(payloads, list):
            raise ApiError(400, 50109, "The request body contains invalid JSON.")
        for index, payload in enumerate(payloads):
            _check_command(index, payload)
        commands = self.world.overwrite_commands(scope, payloads)
        return ApiReply(200, [self.ctx.wire.command(c) for c in commands])

    # --- interaction responses ---------------------------------------------------------------

    def _interaction(self, request: ApiRequest, id_param: str) -> Interaction:
        interaction = self.world.interaction_by_token(request.params["webhook_token"])
        if interaction is None:
            raise ApiError.unknown("Webhook" if id_param == "application" else "Interaction")
        if id_param == "interaction" and request.params["webhook_id"] != str(interaction.id):
            raise ApiError.unknown("Interaction")
        application_id = str(self.world.application.id)
        if id_param == "application" and request.params["webhook_id"] != application_id:
            raise ApiError.unknown("Webhook")
        return interaction

    async def callback(self, request: ApiRequest) -> ApiReply:
        interaction = self._interaction(request, "interaction")
        if interaction.response_type is not None:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        if self.world.clock() - interaction.created_at > self.ctx.interaction_ack_timeout:
            raise ApiError.unknown("Interaction")  # the 3-second window has passed
        body = request.body()
        kind = body.get("type")
        allowed = (
            CALLBACK_TYPES if interaction.type == MESSAGE_COMPONENT else COMMAND_CALLBACK_TYPES
        )
        if not isinstance(kind, int) or kind not in allowed:
            raise ApiError.bad_choice("type", allowed)
        data: Json = body.get("data") or {}
        message: StoredMessage | None = None
        updated: StoredMessage | None = None
        if kind in (CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE):
            form = message_forms.parse(data, request.uploads, self.world.snowflakes)
            if kind == CHANNEL_MESSAGE and form.is_empty():
                raise message_forms.empty_message()
            flags = (form.flags or 0) | (LOADING if kind == DEFERRED_CHANNEL_MESSAGE else 0)
            message = self._post(interaction, form, flags)
            interaction.message_id = message.id
        elif kind in (DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE):
            # The original response is the message the button is on.
            interaction.message_id = interaction.source_message_id
            source = self.world.message(interaction.channel_id, interaction.message_id or 0)
            if kind == UPDATE_MESSAGE and source is not None:
                form = message_forms.parse(data, request.uploads, self.world.snowflakes)
                self.world.edit_with_form(source, form)
                updated = source
        interaction.response_type = int(kind)
        interaction.response = body
        interaction.responded_at = self.world.clock()
        if message is not None:
            await self._announce(message)
        if updated is not None and not updated.flags & EPHEMERAL:
            await self.ctx.feed.message_updated(updated)
        if request.query.get("with_response") not in ("1", "true", "True"):
            return NO_CONTENT
        summary: Json = {"id": str(interaction.id), "type": interaction.type}
        reply: Json = {"interaction": summary}
        if message is not None:
            summary["response_message_id"] = str(message.id)
            summary["response_message_loading"] = bool(message.flags & LOADING)
            summary["response_message_ephemeral"] = bool(message.flags & EPHEMERAL)
            reply["resource"] = {"type": kind, "message": self.ctx.wire.message(message)}
        return ApiReply(200, reply)

    def _post(
        self, interaction: Interaction, form: message_forms.MessageForm, flags: int
    ) -> StoredMessage:
        channel = self.world.channels[interaction.channel_id]
        return self.world.post_message(
            channel,
            self.world.bot.id,
            form.content or "",
            embeds=form.embeds,
            attachments=form.new_attachments,
            components=form.components,
            allowed_mentions=form.allowed_mentions,
            flags=flags,
            webhook_id=self.world.application.id,
            interaction=interaction,
        )

    async def _announce(self, message: StoredMessage) -> None:
        # Ephemeral messages exist only for the invoking user; the bot gets no dispatch for them.
        if not message.flags & EPHEMERAL:
            await self.ctx.feed.message_created(message)

    async def followup(self, request: ApiRequest) -> ApiReply:
        interaction = self._interaction(request, "application")
        if interaction.response_type is None:
            raise ApiError.unknown("Webhook")
        form = message_forms.parse(request.body(), request.uploads, self.world.snowflakes)
        if form.is_empty():
            raise message_forms.empty_message()
        original = self.world.message(interaction.channel_id, interaction.message_id or 0)
        if original is not None and original.flags & LOADING:
            # After a deferred response the first follow-up replaces the "thinking..." message,
            # keeping the ephemeral choice made when deferring.
            message = original
            self.world.edit_with_form(message, form, flags=message.flags & ~LOADING)
            if not message.flags & EPHEMERAL:
                await self.ctx.feed.message_updated(message)
        else:
            message = self._post(interaction, form, form.flags or 0)
            interaction.followup_ids.append(message.id)
            await self._announce(message)
        if request.query.get("wait") in ("1", "true", "True"):
            return ApiReply(200, self.ctx.wire.message(message))
        return NO_CONTENT

    def _webhook_message(self, request: ApiRequest) -> tuple[Interaction, StoredMessage]:
        interaction = self._interaction(request, "application")
        raw = request.params.get("message_id", "@original")
        if raw == "@original":
            message_id = interaction.message_id
        else:
            # Follow-up tokens reach only the messages of their own interaction.
            message_id = int(raw) if raw.isdigit() else None
            if message_id not in (interaction.message_id, *interaction.followup_ids):
                message_id = None
        if message_id is None:
            raise ApiError.unknown("Message")
        message = self.world.message(interaction.channel_id, message_id)
        if message is None:
            raise ApiError.unknown("Message")
        return interaction, message

    async def get_webhook_message(self, request: ApiRequest) -> ApiReply:
        _, message = self._webhook_message(request)
        return ApiReply(200, self.ctx.wire.message(message))

    async def edit_webhook_message(self, request: ApiRequest) -> ApiReply:
        _, message = self._webhook_message(request)
        form = message_forms.parse(request.body(), request.uploads, self.world.snowflakes)
        # Editing a deferred ("thinking...") response replaces the loading state with the answer.
        self.world.edit_with_form(message, form, flags=message.flags & ~LOADING)
        if not message.flags & EPHEMERAL:
            await self.ctx.feed.message_updated(message)
        return ApiReply(200, self.ctx.wire.message(message))

    async def delete_webhook_message(self, request: ApiRequest) -> ApiReply:
        _, message = self._webhook_message(request)
        self.world.delete_message(message)
        if not message.flags & EPHEMERAL:
            await self.ctx.feed.message_deleted(message)
        return NO_CONTENT


def _check_command(index: int, payload: object) -> None:
    if not isinstance(payload, dict):
        message = "Only dictionaries may be used in a DictType"
        raise ApiError.invalid_form(str(index), "DICT_TYPE_CONVERT", message)
    name = payload.get("name")
    command_type = int(payload.get("type", 1))
    # Chat-input command names are lowercase; context-menu names may have capitals and spaces.
    if not isinstance(name, str):
        valid = False
    elif command_type == 1:
        valid = bool(_NAME.match(name)) and name == name.lower()
    else:
        valid = 1 <= len(name) <= 32
    if not valid:
        message = "Command name is invalid"
        raise ApiError.invalid_form(f"{index}.name", "APPLICATION_COMMAND_INVALID_NAME", message)
    description = payload.get("description", "")
    if command_type == 1 and not (isinstance(description, str) and 1 <= len(description) <= 100):
        raise ApiError.bad_length(f"{index}.description", 1, 100)
    permissions = payload.get("default_member_permissions")
    if permissions is not None and not str(permissions).isdigit():
        message = f'Value "{permissions}" is not int.'
        path = f"{index}.default_member_permissions"
        raise ApiError.invalid_form(path, "NUMBER_TYPE_COERCE", message)
    if command_type == 1:
        _check_options(f"{index}.options", payload.get("options") or [], within=0)


def _check_options(path: str, options: list[Json], *, within: int) -> None:
    """Options of a chat-input command (`within` 0), a subcommand group (2) or a subcommand (1):
    at most 25, named like commands, described in 1 to 100 characters, required ones first, at
    most 25 choices. Groups sit at the top only and hold subcommands only; a level holds either
    subcommands or plain options."""
    if len(options) > 25:
        raise ApiError.too_long(path, 25)
    kinds = [int(option.get("type", 0)) for option in options]
    nesting = [kind in (SUB_COMMAND, SUB_COMMAND_GROUP) for kind in kinds]
    misplaced = (
        (any(nesting) and not all(nesting))
        or (within == SUB_COMMAND and any(nesting))
        or (within == SUB_COMMAND_GROUP and any(kind != SUB_COMMAND for kind in kinds))
    )
    if misplaced:
        message = "Sub-command and sub-command group option types are mutually exclusive"
        raise ApiError.invalid_form(path, "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID", message)
    optional_seen = False
    for position, (option, kind) in enumerate(zip(options, kinds, strict=True)):
        where = f"{path}.{position}"
        name = option.get("name")
        if not (isinstance(name, str) and _NAME.match(name) and name == name.lower()):
            message = "Command name is invalid"
            raise ApiError.invalid_form(
                f"{where}.name", "APPLICATION_COMMAND_INVALID_NAME", message
            )
        description = option.get("description", "")
        if not (isinstance(description, str) and 1 <= len(description) <= 100):
            raise ApiError.bad_length(f"{where}.description", 1, 100)
        if kind in (SUB_COMMAND, SUB_COMMAND_GROUP):
            _check_options(f"{where}.options", option.get("options") or [], within=kind)
            continue
        if not option.get("required"):
            optional_seen = True
        elif optional_seen:
            message = "Required options must be placed before non-required options"
            raise ApiError.invalid_form(
                where, "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID", message
            )
        choices = option.get("choices") or []
        if len(choices) > 25:
            raise ApiError.too_long(f"{where}.choices", 25)
        for number, choice in enumerate(choices):
            label = choice.get("name")
            if not (isinstance(label, str) and 1 <= len(label) <= 100):
                raise ApiError.bad_length(f"{where}.choices.{number}.name", 1, 100)
