"""The Slack app manifest for `chat-bridge slack-manifest`: paste it into "Create New App → From an
app manifest" and the app has exactly the scopes and event subscriptions the adapter uses.
"""

from __future__ import annotations

import json
from typing import Any

from adapters.slack.formatting import prompt_title
from adapters.slack.ingress import EVENTS_PATH
from bridge.admin import COMMANDS
from bridge.config import Settings

DEFAULT_APP_NAME = "chat-bridge"

# Each event needs the scope next to it (Slack rejects a manifest that subscribes without it).
# The message.* events also serve channels whose trigger is "always" (every message answered).
BOT_EVENTS = (
    "app_mention",  # app_mentions:read
    "message.channels",  # channels:history
    "message.groups",  # groups:history
    "message.im",  # im:history
    "message.mpim",  # mpim:history
    "assistant_thread_started",  # assistant:write
    "assistant_thread_context_changed",  # assistant:write
    "app_uninstalled",
    "tokens_revoked",
)
BOT_SCOPES = (
    "app_mentions:read",
    "assistant:write",  # the AI-app container and native streaming
    "channels:history",
    "chat:write",  # also chat.postEphemeral: notices only their reader sees
    "commands",  # the admin slash command
    "groups:history",
    "im:history",
    "im:read",
    "im:write",
    "mpim:history",
    "users:read",
)


def render_manifest(settings: Settings, *, name: str = DEFAULT_APP_NAME) -> str:
    """The manifest as JSON. In HTTP mode the request URL is built from slack.http_host/http_port;
    Slack must reach it from the internet, so see `manifest_notes` before pasting it."""
    slack = settings.slack
    event_subscriptions: dict[str, Any] = {"bot_events": list(BOT_EVENTS)}
    if slack.mode == "http":
        event_subscriptions["request_url"] = request_url(settings)
    assistant_view: dict[str, Any] = {
        "assistant_description": "Answers with an LLM, streaming the reply as it is written."
    }
    slash_command: dict[str, Any] = {
        "command": slack.command,
        "description": "The bridge's settings here: model, prompt, trigger, usage, reset.",
        "usage_hint": usage_hint(),
        # Slack still escapes &, < and >; mentions arrive as typed (the adapter reads plain text).
        "should_escape": False,
    }
    if slack.mode == "http":
        # Bolt serves commands on the same path as events.
        slash_command["url"] = request_url(settings)
    if slack.suggested_prompts:
        assistant_view["suggested_prompts"] = [
            {"title": prompt_title(prompt), "message": prompt} for prompt in slack.suggested_prompts
        ]
    manifest = {
        "display_information": {
            "name": name,
            "description": "An LLM in your threads and DMs, replies streamed as they are written.",
        },
        "features": {
            "app_home": {
                "home_tab_enabled": False,
                "messages_tab_enabled": True,
                "messages_tab_read_only_enabled": False,
            },
            "bot_user": {"display_name": name, "always_online": True},
            "assistant_view": assistant_view,
            "slash_commands": [slash_command],
        },
        "oauth_config": {"scopes": {"bot": list(BOT_SCOPES)}},
        "settings": {
            "event_subscriptions": event_subscriptions,
            "org_deploy_enabled": False,
            "socket_mode_enabled": slack.mode == "socket",
            "token_rotation_enabled": False,
        },
    }
    return json.dumps(manifest, indent=2, ensure_ascii=False)


def usage_hint() -> str:
    """`help | reset | … | model <model> | trigger <mention|always|off>`, from the core's list."""
    parts = []
    for spec in COMMANDS:
        if spec.choices:
            parts.append(f"{spec.name} <{'|'.join(spec.choices)}>")
        elif spec.argument:
            parts.append(f"{spec.name} <{spec.argument}>")
        else:
            parts.append(spec.name)
    return " | ".join(parts)


def request_url(settings: Settings) -> str:
    host = settings.slack.http_host
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"http://{host}:{settings.slack.http_port}{EVENTS_PATH}"


def manifest_notes(settings: Settings) -> list[str]:
    """What to check before pasting the manifest (JSON has no comments; print these beside it)."""
    command = settings.slack.command
    notes = [
        f"The admin command {command} (features.slash_commands) needs the commands scope; an "
        "app already installed must be reinstalled for it. Its answers are shown only to the "
        "person who ran it. The admins are the user ids in access.admins.",
        "Every message in a channel reaches the bridge (message.* events), so access.* and a "
        'channel\'s trigger ("always") decide what is answered; the bot must be in the channel.',
    ]
    if settings.slack.mode == "socket":
        return [
            "Socket Mode: after creating the app, make an app-level token with the "
            "connections:write scope (Basic Information → App-Level Tokens) for slack.app_token.",
            *notes,
        ]
    return [
        f"HTTP mode: settings.event_subscriptions.request_url and the slash command's url are "
        f"{request_url(settings)}, the address the bridge listens on. Slack must reach it from "
        "the internet: replace both with the public HTTPS URL that forwards to it (it must end "
        f"in {EVENTS_PATH}).",
        *notes,
    ]
