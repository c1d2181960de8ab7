"""The Discord side: discord.py's gateway and REST API translated to the core's ports."""

from adapters.discord.adapter import DiscordAdapter
from adapters.discord.gateway import DiscordGatewayError
from adapters.discord.invite import invite_url
from adapters.discord.surface import DiscordReplySurface

__all__ = ["DiscordAdapter", "DiscordGatewayError", "DiscordReplySurface", "invite_url"]
