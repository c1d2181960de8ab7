"""The admin console: server-rendered pages over the stored conversations (aiohttp, Jinja2)."""

from adapters.console.passwords import hash_password
from adapters.console.server import ConsoleServer

__all__ = ["ConsoleServer", "hash_password"]
