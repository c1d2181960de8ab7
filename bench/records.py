"""What the harness records from an emulator during a run, whatever the platform.

Times are the emulators' clock (`time.monotonic`), which the LLM process's log also uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class VisibleWrite:
    """A bot message as the platform shows it right after one write (post, edit, append)."""

    at: float
    place: str  # the conversation's place: a Discord channel id, a Slack "channel/thread_ts"
    message_id: str
    text: str  # the message's whole visible text after the write
    posted: bool  # True when this write created the message


@dataclass(frozen=True, slots=True)
class PlatformCall:
    """One API request the bot made (Discord REST route or Slack Web API method)."""

    at: float
    method: str
    status: int


class World(Protocol):
    """An emulated platform set up for one scenario run, and what it saw."""

    platform: str
    writes: list[VisibleWrite]
    places: dict[str, int]  # place -> conversation, filled as user messages are sent

    def clock(self) -> float: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def bridge_section(self) -> str:
        """The platform's TOML section of the bridge's config (secrets excluded)."""
        ...

    def bridge_env(self) -> dict[str, str]:
        """The secrets, as `chat-bridge run` reads them from the environment."""
        ...

    def seed_args(self) -> list[str]:
        """The seed bot's command-line arguments for this platform (secrets excluded)."""
        ...

    def seed_env(self) -> dict[str, str]: ...

    async def wait_connected(self) -> None:
        """Until the bot is connected (callers bound the wait)."""
        ...

    async def send(self, conversation: int) -> float:
        """Post the conversation's user message; returns when it was posted."""
        ...

    def calls(self, since: float) -> list[PlatformCall]: ...
