"""A local Slack: Web API, Socket Mode and signed Events API delivery for one workspace and app.

The real slack_sdk and slack_bolt talk to it over loopback HTTP and WebSocket; see
docs/emulators/slack.md for what it covers.
"""

from sandbox.slack_emulator.arguments import ApiError
from sandbox.slack_emulator.commands import SlashCommand
from sandbox.slack_emulator.delivery import Attempt, Delivery, slack_signature
from sandbox.slack_emulator.emulator import EmulatorStats, SlackEmulator
from sandbox.slack_emulator.files import FileDownload, UploadedFile
from sandbox.slack_emulator.interactions import Interaction
from sandbox.slack_emulator.model import Change, Ephemeral, Message, User
from sandbox.slack_emulator.rate_limits import SLACK_POST_BURST, SLACK_TIERS
from sandbox.slack_emulator.rendering import ShownMessage, render_blocks
from sandbox.slack_emulator.socket_mode import SocketAck
from sandbox.slack_emulator.web_api import ApiCall

__all__ = [
    "SLACK_POST_BURST",
    "SLACK_TIERS",
    "ApiCall",
    "ApiError",
    "Attempt",
    "Change",
    "Delivery",
    "Ephemeral",
    "EmulatorStats",
    "FileDownload",
    "Interaction",
    "Message",
    "ShownMessage",
    "SlackEmulator",
    "SlashCommand",
    "SocketAck",
    "UploadedFile",
    "User",
    "render_blocks",
    "slack_signature",
]
