"""The app manifest: valid JSON, Socket Mode or a request URL, and a scope for every event."""

from __future__ import annotations

import json

from adapters.slack import manifest_notes, render_manifest
from bridge.config import Settings, SlackSettings

NEEDED_SCOPE = {
    "app_mention": "app_mentions:read",
    "message.channels": "channels:history",
    "message.groups": "groups:history",
    "message.im": "im:history",
    "message.mpim": "mpim:history",
    "assistant_thread_started": "assistant:write",
    "reaction_added": "reactions:read",
}


def settings(**slack: object) -> Settings:
    return Settings(slack=SlackSettings(**slack))  # type: ignore[arg-type]


def test_socket_mode_manifest() -> None:
    manifest = json.loads(render_manifest(settings(mode="socket")))
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert "request_url" not in manifest["settings"]["event_subscriptions"]
    assert manifest["display_information"]["name"] == "chat-bridge"
    assert manifest["features"]["bot_user"]["display_name"] == "chat-bridge"
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True
    assert "connections:write" in " ".join(manifest_notes(settings(mode="socket")))
    [command] = manifest["features"]["slash_commands"]
    assert command["command"] == "/chat-bridge" and "url" not in command
    assert command["should_escape"] is False and command["description"]
    assert command["usage_hint"].startswith("reset | usage | settings | model <model>")
    assert "trigger <mention|always|off>" in command["usage_hint"]


def test_the_admin_command_is_named_by_the_config_and_needs_the_commands_scope() -> None:
    config = settings(command="/bridge-admin")
    manifest = json.loads(render_manifest(config))
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == ["/bridge-admin"]
    assert "commands" in manifest["oauth_config"]["scopes"]["bot"]
    notes = " ".join(manifest_notes(config))
    assert "/bridge-admin" in notes and "commands scope" in notes and "access.admins" in notes


def test_http_manifest_points_at_the_events_endpoint() -> None:
    config = settings(mode="http", http_host="0.0.0.0", http_port=8080)
    manifest = json.loads(render_manifest(config))
    subscriptions = manifest["settings"]["event_subscriptions"]
    assert manifest["settings"]["socket_mode_enabled"] is False
    assert subscriptions["request_url"] == "http://0.0.0.0:8080/slack/events"
    # Button clicks go to the same endpoint (Bolt serves both).
    assert manifest["settings"]["interactivity"] == {
        "is_enabled": True,
        "request_url": subscriptions["request_url"],
    }
    # Bolt takes slash commands on the events endpoint too.
    assert manifest["features"]["slash_commands"][0]["url"] == subscriptions["request_url"]
    assert "public" in " ".join(manifest_notes(config))


def test_every_event_has_its_scope_and_the_reply_scopes_are_there() -> None:
    manifest = json.loads(render_manifest(settings()))
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    events = manifest["settings"]["event_subscriptions"]["bot_events"]
    assert {NEEDED_SCOPE[e] for e in events if e in NEEDED_SCOPE} <= scopes
    # Every message event: channels whose trigger is "always" are answered without mentions.
    assert set(NEEDED_SCOPE) <= set(events)
    assert {"chat:write", "im:read", "im:write", "users:read"} <= scopes


def test_files_buttons_and_reactions_have_what_they_need() -> None:
    manifest = json.loads(render_manifest(settings()))
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"files:read", "reactions:read"} <= scopes
    assert "reaction_added" in manifest["settings"]["event_subscriptions"]["bot_events"]
    # Socket Mode delivers clicks over the socket: no request URL.
    assert manifest["settings"]["interactivity"] == {"is_enabled": True}
    notes = " ".join(manifest_notes(settings()))
    assert "files:read" in notes and "reinstalled" in notes


def test_suggested_prompts_appear_in_the_assistant_view() -> None:
    manifest = json.loads(render_manifest(settings(suggested_prompts=["What can you do?"])))
    view = manifest["features"]["assistant_view"]
    assert view["assistant_description"]
    assert view["suggested_prompts"] == [
        {"title": "What can you do?", "message": "What can you do?"}
    ]
    assert (
        "suggested_prompts"
        not in json.loads(render_manifest(settings()))["features"]["assistant_view"]
    )
