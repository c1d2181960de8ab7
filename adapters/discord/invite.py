"""The OAuth2 URL that adds the bot to a server (`chat-bridge discord-invite`).

The config holds the bot token, not the application id. A bot token's first segment is the
base64 of the bot's user id, and a bot user's id is its application's id, so the client id is
read from the token without a network call.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import urlencode

import discord

from bridge.config import DiscordSettings, Settings

AUTHORIZE_URL = "https://discord.com/oauth2/authorize"
SCOPES = ("bot", "applications.commands")


def required_permissions() -> discord.Permissions:
    """What the bridge does in a channel. Renaming a thread the bot opened needs no extra
    permission: a thread's creator may rename it. Buttons on its own messages, clicks on them
    and the reactions it reads (🛑) need none either: reaction events come for the channels the
    bot can view; files are read from their signed CDN links."""
    return discord.Permissions(
        view_channel=True,
        send_messages=True,
        send_messages_in_threads=True,
        create_public_threads=True,
        read_message_history=True,
    )


def application_id_from_token(token: str) -> int:
    first = token.strip().split(".", 1)[0]
    try:
        decoded = base64.b64decode(first + "=" * (-len(first) % 4), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    if not decoded.isdigit():
        raise ValueError(
            "discord.token does not look like a bot token (its first segment should be the "
            "base64 of the bot's id); copy it again from the developer portal (Bot → Reset Token)"
        )
    return int(decoded)


def invite_url(settings: DiscordSettings | Settings) -> str:
    """The invite URL for the configured bot; raises ValueError without a usable token."""
    discord_settings = settings.discord if isinstance(settings, Settings) else settings
    if discord_settings.token is None:
        raise ValueError("discord.token is not set")
    client_id = application_id_from_token(discord_settings.token.get_secret_value())
    query = {
        "client_id": str(client_id),
        "scope": " ".join(SCOPES),
        "permissions": str(required_permissions().value),
    }
    return f"{AUTHORIZE_URL}?{urlencode(query)}"
