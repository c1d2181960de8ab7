"""A local Discord (REST API and gateway) that discord.py connects to unchanged.

See docs/emulators/discord.md for what it emulates and what it does not.
"""

from .cdn import Download, FileUpload
from .emulator import DiscordEmulator
from .rate_limits import BucketRule
from .records import (
    Change,
    EmulatorStats,
    InteractionRecord,
    RecordedRequest,
    RegisteredCommand,
    ShownMessage,
    ThreadInfo,
    TypingEvent,
)

__all__ = [
    "BucketRule",
    "Change",
    "DiscordEmulator",
    "Download",
    "FileUpload",
    "EmulatorStats",
    "InteractionRecord",
    "RecordedRequest",
    "RegisteredCommand",
    "ShownMessage",
    "ThreadInfo",
    "TypingEvent",
]
