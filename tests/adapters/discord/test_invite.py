"""The invite URL: the application id read from the token, both scopes, the permissions used."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import discord
import pytest
from pydantic import SecretStr

from adapters.discord import invite_url
from bridge.config import DiscordSettings, Settings

APP_ID = 1234567890123456789


def token_for(user_id: int) -> str:
    first = base64.b64encode(str(user_id).encode()).decode().rstrip("=")
    return f"{first}.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789AB"


def test_the_invite_url_names_the_bot_both_scopes_and_the_permissions_it_needs() -> None:
    url = invite_url(DiscordSettings(enabled=True, token=SecretStr(token_for(APP_ID))))

    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "discord.com", "/oauth2/authorize")
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    assert query["client_id"] == str(APP_ID)
    assert query["scope"].split() == ["bot", "applications.commands"]
    granted = discord.Permissions(int(query["permissions"]))
    assert granted.view_channel and granted.read_message_history
    assert granted.send_messages and granted.send_messages_in_threads
    assert granted.create_public_threads
    # Nothing it does not use: no moderation, no mass pings.
    assert not (granted.administrator or granted.manage_messages or granted.mention_everyone)


def test_the_whole_settings_are_accepted_too() -> None:
    settings = Settings(discord=DiscordSettings(token=SecretStr(token_for(42))))
    assert "client_id=42&" in invite_url(settings)


@pytest.mark.parametrize("token", ["test-token", "not base64!.x.y", ""])
def test_a_token_that_names_no_bot_is_a_clear_error(token: str) -> None:
    with pytest.raises(ValueError, match="does not look like a bot token"):
        invite_url(DiscordSettings(token=SecretStr(token)))
