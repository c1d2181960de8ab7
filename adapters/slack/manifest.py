"""The Slack app manifest for `chat-bridge slack-manifest`: paste it into "Create New App → From an
app manifest" and the app has exactly the scopes and event subscriptions the adapter uses.

`slack.app_view` picks the AI-app feature: `assistant_view` (the assistant pane and its
`assistant_thread_*` events), `agent_view` (the newer agent view, opened from the Messages tab:
`app_home_opened`, and `agent_session_stopped` for Slack's own Stop button), or neither.
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
# Edits and deletions arrive as message.* events too (subtypes message_changed/_deleted).
BOT_EVENTS = (
    "app_mention",  # app_mentions:read
    "message.channels",  # channels:history
    "message.groups",  # groups:history
    "message.im",  # im:history
    "message.mpim",  # mpim:history
    "reaction_added",  # reactions:read (🛑 stops a reply)
    "app_uninstalled",
    "tokens_revoked",
)
VIEW_EVENTS = {
    "assistant": ("assistant_thread_started", "assistant_thread_context_changed"),
    "agent": ("app_home_opened", "agent_session_stopped"),
    "off": (),
}
BOT_SCOPES = (
    "app_mentions:read",
    "channels:history",
    "chat:write",  # also chat.postEphemeral: notices only their reader sees
    "commands",  # the admin slash command
    "files:read",  # downloading the files of people's messages
    "groups:history",
    "im:history",
    "im:read",
    "im:write",
    "mpim:history",
    "reactions:read",
    "users:read",
)
# The AI-app feature (either view) and native streaming; Slack grants it with the feature.
VIEW_SCOPE = "assistant:write"
DESCRIPTION = "Answers with an LLM, streaming the reply as it is written."


def render_manifest(settings: Settings, *, name: str = DEFAULT_APP_NAME) -> str:
    """The manifest as JSON. In HTTP mode the request URL is built from slack.http_host/http_port;
    Slack must reach it from the internet, so see `manifest_notes` before pasting it."""
    slack = settings.slack
    view = slack.app_view
    event_subscriptions: dict[str, Any] = {"bot_events": [*BOT_EVENTS, *VIEW_EVENTS[view]]}
    # Clicks on the Stop and feedback buttons (Bolt takes them on the events path too).
    interactivity: dict[str, Any] = {"is_enabled": True}
    if slack.mode == "http":
        event_subscriptions["request_url"] = request_url(settings)
        interactivity["request_url"] = request_url(settings)
    scopes = sorted({*BOT_SCOPES, VIEW_SCOPE} if view != "off" else BOT_SCOPES)
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
    features: dict[str, Any] = {
        "app_home": {
            "home_tab_enabled": False,
            "messages_tab_enabled": True,
            "messages_tab_read_only_enabled": False,
        },
        "bot_user": {"display_name": name, "always_online": True},
    }
    if view != "off":
        ai_view: dict[str, Any] = {f"{view}_description": DESCRIPTION}
        if slack.suggested_prompts:
            ai_view["suggested_prompts"] = [
                {"title": prompt_title(prompt), "message": prompt}
                for prompt in slack.suggested_prompts
            ]
        features[f"{view}_view"] = ai_view
    features["slash_commands"] = [slash_command]
    manifest = {
        "display_information": {
            "name": name,
            "description": "An LLM in your threads and DMs, replies streamed as they are written.",
        },
        "features": features,
        "oauth_config": {"scopes": {"bot": scopes}},
        "settings": {
            "event_subscriptions": event_subscriptions,
            "interactivity": interactivity,
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
        "files:read lets the bridge download the files people attach (only those of messages it "
        "answers, within limits.*); reactions:read lets a 🛑 reaction stop a reply. An app "
        "installed before they were added must be reinstalled for them.",
        *_view_notes(settings.slack.app_view),
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


def _view_notes(view: str) -> list[str]:
    if view == "agent":
        return [
            "slack.app_view = agent: the app uses Slack's agent view (features.agent_view); "
            "people start conversations from its Messages tab, where the suggested prompts "
            "show. Slack's own Stop button on a streaming reply sends agent_session_stopped."
        ]
    if view == "off":
        return [
            "slack.app_view = off: no AI-app view and no assistant:write scope; Slack may then "
            "refuse native streaming (replies are posted and edited instead) and the assistant "
            "status line."
        ]
    return [
        "slack.app_view = assistant: the app opens in Slack's assistant pane "
        "(features.assistant_view), where the suggested prompts show in each new thread."
    ]
