"""chat.postMessage, chat.update, chat.delete and conversations.replies."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from sandbox.slack_emulator import events
from sandbox.slack_emulator.arguments import ApiError, Args, Handler
from sandbox.slack_emulator.model import (
    Change,
    Message,
    Workspace,
    channel_type_of,
    is_conversation_id,
)
from sandbox.slack_emulator.validation import check_text, message_blocks

if TYPE_CHECKING:
    from sandbox.slack_emulator.emulator import SlackEmulator

MAX_REPLIES_PAGE = 1000


def conversation(args: Args, key: str = "channel", *, missing: str = "channel_not_found") -> str:
    channel = args.text(key)
    if not channel:
        raise ApiError(missing, messages=[f"[ERROR] missing required field: {key}"])
    if not is_conversation_id(channel):
        raise ApiError("channel_not_found")
    return channel


def thread_root(workspace: Workspace, channel: str, thread_ts: str | None) -> str | None:
    """Replying to a reply threads under its root, as in Slack."""
    if not thread_ts:
        return None
    parent = workspace.find(channel, thread_ts)
    if parent is not None and parent.thread_ts and parent.thread_ts != parent.ts:
        return parent.thread_ts
    return thread_ts


def new_bot_message(emu: SlackEmulator, channel: str, thread_ts: str | None) -> Message:
    identity = emu.identity
    return Message(
        ts=emu.workspace.next_ts(),
        channel=channel,
        user=identity.bot_user_id,
        bot_id=identity.bot_id,
        app_id=identity.app_id,
        bot_profile=identity.bot_profile(),
        team=identity.team_id,
        thread_ts=thread_root(emu.workspace, channel, thread_ts),
    )


def own_message(emu: SlackEmulator, args: Args, forbidden: str) -> Message:
    channel = conversation(args)
    if channel not in emu.workspace.channels:
        raise ApiError("channel_not_found")
    message = emu.workspace.find(channel, args.text("ts"))
    if message is None:
        raise ApiError("message_not_found")
    if message.user != emu.identity.bot_user_id:
        raise ApiError(forbidden)
    return message


def post_message(emu: SlackEmulator, args: Args) -> dict[str, Any]:
    channel = conversation(args)
    text = args.text("text")
    blocks = message_blocks(args)
    if not text and not blocks and not args.text("attachments"):
        raise ApiError("no_text")
    check_text(text, emu.max_text_chars)
    message = new_bot_message(emu, channel, args.text("thread_ts") or None)
    message.text = text
    message.blocks = blocks
    message.metadata = args.json_object("metadata")
    emu.workspace.add(message)
    emu.echo(events.message_event(message, channel_type_of(channel)))
    return {"channel": channel, "ts": message.ts, "message": message.to_api()}


def update(emu: SlackEmulator, args: Args) -> dict[str, Any]:
    message = own_message(emu, args, "cant_update_message")
    blocks = message_blocks(args)
    if "text" not in args and blocks is None:
        raise ApiError("no_text")
    previous = message.to_api()
    if "text" in args:
        text = args.text("text")
        check_text(text, emu.max_text_chars)
        message.text = text
    if blocks is not None:
        # An empty list removes the blocks; omitting `blocks` keeps them (Slack's rule).
        message.blocks = blocks or None
        # Blocks given to chat.update are the message's content from now on, also for a message
        # that was streamed: `text` becomes their fallback, not streamed text shown above them.
        # The stream's task cards were blocks of the message too: they go with the others.
        message.streamed = False
        message.tasks.clear()
        message.task_offsets.clear()
    message.edits += 1
    message.edited = {"user": emu.identity.bot_user_id, "ts": emu.workspace.next_ts()}
    emu.workspace.notify(Change("updated", message.channel, message.ts, message))
    kind = channel_type_of(message.channel)
    emu.echo(events.message_changed_event(previous, message, kind, emu.workspace.next_ts()))
    return {
        "channel": message.channel,
        "ts": message.ts,
        "text": message.text,
        "message": message.to_api(),
    }


def delete(emu: SlackEmulator, args: Args) -> dict[str, Any]:
    message = own_message(emu, args, "cant_delete_message")
    emu.workspace.remove(message.channel, message.ts)
    kind = channel_type_of(message.channel)
    emu.echo(events.message_deleted_event(message, kind, emu.workspace.next_ts()))
    return {"channel": message.channel, "ts": message.ts}


def replies(emu: SlackEmulator, args: Args) -> dict[str, Any]:
    channel = conversation(args)
    if channel not in emu.workspace.channels:
        raise ApiError("channel_not_found")
    ts = args.required("ts")
    thread = emu.workspace.thread(channel, ts)
    if not thread:
        raise ApiError("thread_not_found")
    limit = min(max(args.integer("limit", MAX_REPLIES_PAGE), 1), MAX_REPLIES_PAGE)
    start = _cursor_position(args.text("cursor"), thread)
    page = thread[start : start + limit]
    has_more = start + limit < len(thread)
    answer: dict[str, Any] = {
        "messages": [_with_thread_fields(emu, m) for m in page],
        "has_more": has_more,
    }
    if has_more:
        answer["response_metadata"] = {"next_cursor": _cursor_for(thread[start + limit].ts)}
    return answer


def _with_thread_fields(emu: SlackEmulator, message: Message) -> dict[str, Any]:
    data = message.to_api()
    data.update(emu.workspace.thread_summary(message))
    return data


def _cursor_for(ts: str) -> str:
    # Slack's cursors are base64 of "next_ts:<ts without the dot>"; clients treat them as opaque.
    return base64.b64encode(f"next_ts:{ts.replace('.', '')}".encode()).decode()


def _cursor_position(cursor: str, thread: list[Message]) -> int:
    if not cursor:
        return 0
    try:
        decoded = base64.b64decode(cursor, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ApiError("invalid_cursor") from None
    prefix, _, digits = decoded.partition(":")
    for index, message in enumerate(thread):
        if prefix == "next_ts" and message.ts.replace(".", "") >= digits:
            return index
    raise ApiError("invalid_cursor")


HANDLERS: dict[str, Handler] = {
    "chat.postMessage": post_message,
    "chat.update": update,
    "chat.delete": delete,
    "conversations.replies": replies,
}
