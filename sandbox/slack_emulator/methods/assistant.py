"""assistant.threads.setStatus, setTitle and setSuggestedPrompts (the AI-app thread chrome)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sandbox.slack_emulator.arguments import ApiError, Args, Handler
from sandbox.slack_emulator.methods.chat import conversation
from sandbox.slack_emulator.model import Change

if TYPE_CHECKING:
    from sandbox.slack_emulator.emulator import SlackEmulator

MAX_LOADING_MESSAGES = 10
MAX_SUGGESTED_PROMPTS = 4


def set_status(emu: SlackEmulator, args: Args) -> dict[str, Any]:
    channel = conversation(args, "channel_id", missing="invalid_arguments")
    thread_ts = args.required("thread_ts")
    if "status" not in args:
        raise ApiError("invalid_arguments", messages=["[ERROR] missing required field: status"])
    loading = args.json_list("loading_messages") or []
    if len(loading) > MAX_LOADING_MESSAGES:
        raise ApiError(
            "invalid_arguments",
            messages=["[ERROR] no more than 10 items allowed [json-pointer:/loading_messages]"],
        )
    emu.workspace.set_status(channel, thread_ts, args.text("status"), [str(m) for m in loading])
    return {}


def set_title(emu: SlackEmulator, args: Args) -> dict[str, Any]:
    channel = conversation(args, "channel_id", missing="invalid_arguments")
    thread_ts = args.required("thread_ts")
    emu.workspace.titles[(channel, thread_ts)] = args.required("title")
    emu.workspace.notify(Change("title", channel, thread_ts))
    return {}


def set_suggested_prompts(emu: SlackEmulator, args: Args) -> dict[str, Any]:
    channel = conversation(args, "channel_id", missing="invalid_arguments")
    prompts = args.json_list("prompts")
    if not prompts or len(prompts) > MAX_SUGGESTED_PROMPTS:
        raise ApiError(
            "invalid_arguments",
            messages=["[ERROR] prompts must hold 1 to 4 items [json-pointer:/prompts]"],
        )
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, dict) or not prompt.get("title") or not prompt.get("message"):
            raise ApiError(
                "invalid_arguments",
                messages=[f"[ERROR] title and message required [json-pointer:/prompts/{index}]"],
            )
    thread_ts = args.text("thread_ts") or None
    entry: dict[str, Any] = {"prompts": prompts}
    if args.text("title"):
        entry["title"] = args.text("title")
    emu.workspace.suggested_prompts[(channel, thread_ts)] = entry
    emu.workspace.notify(Change("prompts", channel, thread_ts))
    return {}


HANDLERS: dict[str, Handler] = {
    "assistant.threads.setStatus": set_status,
    "assistant.threads.setTitle": set_title,
    "assistant.threads.setSuggestedPrompts": set_suggested_prompts,
}
