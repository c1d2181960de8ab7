"""chat.startStream, chat.appendStream and chat.stopStream (Slack's native message streaming).

A stream accepts appends until stopped, expired with `expire_stream`, or older than `stream_ttl`.
Its content comes as `markdown_text` or as `chunks` (text, task cards...), never both in one call,
and the form of its first content is the only one it takes after that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sandbox.slack_emulator import events
from sandbox.slack_emulator.arguments import ApiError, Args, Handler
from sandbox.slack_emulator.methods.chat import conversation, new_bot_message
from sandbox.slack_emulator.model import Change, Message, channel_type_of
from sandbox.slack_emulator.validation import (
    MAX_MARKDOWN_TEXT,
    check_text,
    message_blocks,
    stream_chunks,
)

if TYPE_CHECKING:
    from sandbox.slack_emulator.emulator import SlackEmulator


def start_stream(emu: SlackEmulator, args: Args) -> dict[str, Any]:
    if not emu.native_streaming:
        raise ApiError(emu.streaming_disabled_error, **emu.streaming_disabled_extra)
    channel = conversation(args, missing="invalid_arguments")
    thread_ts = args.required("thread_ts")
    kind = channel_type_of(channel)
    if kind != "im":
        # Outside DMs Slack must know who the stream is for.
        if not args.text("recipient_team_id"):
            raise ApiError("missing_recipient_team_id")
        if not args.text("recipient_user_id"):
            raise ApiError("missing_recipient_user_id")
    display_mode = args.text("task_display_mode")
    if display_mode not in ("", "timeline", "plan"):
        raise ApiError("invalid_arguments", messages=["[ERROR] invalid task_display_mode"])
    text, chunks = _content(args)
    message = new_bot_message(emu, channel, thread_ts)
    message.streaming = message.streamed = True
    message.stream_deadline = emu.clock() + emu.stream_ttl
    _append(message, text, chunks)
    emu.workspace.add(message)
    emu.echo(events.message_event(message, kind))
    return {"channel": channel, "ts": message.ts}


def append_stream(emu: SlackEmulator, args: Args) -> dict[str, Any]:
    message = _streaming_message(emu, args)
    text, chunks = _content(args)
    if not text and not chunks:
        missing = "[ERROR] missing required field: markdown_text"
        raise ApiError("invalid_arguments", messages=[missing])
    _append(message, text, chunks)
    emu.workspace.notify(Change("updated", message.channel, message.ts, message))
    return {"channel": message.channel, "ts": message.ts}


def stop_stream(emu: SlackEmulator, args: Args) -> dict[str, Any]:
    message = _streaming_message(emu, args)
    text, chunks = _content(args)
    blocks = message_blocks(args)
    _append(message, text, chunks)
    if blocks:
        message.blocks = blocks
    metadata = args.json_object("metadata")
    if metadata is not None:
        message.metadata = metadata
    message.streaming = False
    emu.workspace.notify(Change("updated", message.channel, message.ts, message))
    return {"channel": message.channel, "ts": message.ts, "message": message.to_api()}


def is_streaming(emu: SlackEmulator, message: Message) -> bool:
    if message.streaming and emu.clock() > message.stream_deadline:
        message.streaming = False
        emu.workspace.notify(Change("updated", message.channel, message.ts, message))
    return message.streaming


def _streaming_message(emu: SlackEmulator, args: Args) -> Message:
    channel = conversation(args, missing="invalid_arguments")
    message = emu.workspace.find(channel, args.required("ts"))
    if message is None:
        raise ApiError("message_not_found")
    if not is_streaming(emu, message):
        raise ApiError("message_not_in_streaming_state")
    return message


def _content(args: Args) -> tuple[str, list[dict[str, Any]]]:
    """The `markdown_text` argument and the `chunks` list (what slack_sdk's ChatStream sends)."""
    chunks = stream_chunks(args)
    text = args.text("markdown_text")
    if text and chunks is not None:
        raise ApiError("cannot_provide_both_markdown_text_and_chunks")
    check_text(text, MAX_MARKDOWN_TEXT)
    return text, chunks or []


def _append(message: Message, text: str, chunks: list[dict[str, Any]]) -> None:
    """Add one call's content, after checking it has the form the stream's content has."""
    form = "markdown_text" if text else "chunks" if chunks else None
    if form is not None:
        if message.stream_mode not in (None, form):
            raise ApiError("streaming_mode_mismatch")
        message.stream_mode = form
    message.text += text
    for chunk in chunks:
        if chunk["type"] == "markdown_text":
            message.text += chunk["text"]
            continue
        message.chunks.append(chunk)  # task and plan updates, blocks: kept for inspection
        if chunk["type"] == "task_update":
            # Timeline mode: a card shows where its id first came and changes in place.
            message.task_offsets.setdefault(chunk["id"], len(message.text))
            message.tasks[chunk["id"]] = chunk


HANDLERS: dict[str, Handler] = {
    "chat.startStream": start_stream,
    "chat.appendStream": append_stream,
    "chat.stopStream": stop_stream,
}
