"""chat.postEphemeral, and the one way every ephemeral message is shown (a slash command's
acknowledgement and response_url posts come here too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sandbox.slack_emulator.arguments import ApiError, Args, Handler
from sandbox.slack_emulator.methods.chat import conversation, thread_root
from sandbox.slack_emulator.model import Ephemeral
from sandbox.slack_emulator.rendering import render_blocks
from sandbox.slack_emulator.validation import MAX_MARKDOWN_TEXT, check_text, message_blocks

if TYPE_CHECKING:
    from sandbox.slack_emulator.emulator import SlackEmulator

SLACKBOT = "USLACKBOT"


def show_ephemeral(
    emu: SlackEmulator,
    *,
    channel: str,
    user: str,
    text: str,
    blocks: list[dict[str, Any]] | None,
    thread_ts: str | None = None,
    source: str = "chat.postEphemeral",
    author: str | None = None,
) -> Ephemeral:
    workspace = emu.workspace
    rendered = render_blocks(blocks, workspace.users) if blocks else ""
    root = thread_root(workspace, channel, thread_ts)
    return workspace.add_ephemeral(
        Ephemeral(
            ts=workspace.next_ts(),
            channel=channel,
            user=user,
            text=text,
            blocks=blocks,
            rendered=rendered or text,
            thread_ts=root,
            source=source,
            author=author or emu.identity.bot_user_id,
            visible=root is None or len(workspace.thread(channel, root)) > 1,
        )
    )


def post_ephemeral(emu: SlackEmulator, args: Args) -> dict[str, Any]:
    channel = conversation(args)
    if channel not in emu.workspace.channels:
        raise ApiError("channel_not_found")
    user = args.required("user")
    if user not in emu.workspace.users:
        raise ApiError("user_not_found")
    if not emu.workspace.is_member(channel, user):
        raise ApiError("user_not_in_channel")
    text = args.text("text")
    blocks = message_blocks(args)
    markdown = args.text("markdown_text")
    if markdown:
        if text or blocks:
            raise ApiError("markdown_text_conflict")
        if len(markdown) > MAX_MARKDOWN_TEXT:
            raise ApiError("msg_too_long")
        blocks = [{"type": "markdown", "text": markdown}]
    if not text and not blocks and not args.text("attachments"):
        raise ApiError("no_text")
    check_text(text, emu.max_text_chars)
    shown = show_ephemeral(
        emu,
        channel=channel,
        user=user,
        text=text,
        blocks=blocks,
        thread_ts=args.text("thread_ts") or None,
    )
    return {"message_ts": shown.ts}


HANDLERS: dict[str, Handler] = {"chat.postEphemeral": post_ephemeral}
