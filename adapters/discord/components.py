"""The buttons on the bot's replies: Stop while a reply streams, 👍/👎 under a finished answer.

They are rendered with discord.py's `View` but never registered in its view store: a click reaches
the adapter's listener by its custom_id prefix (`adapters.discord.controls`), so the buttons of a
reply keep working after a restart, on whichever process gets the click.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import discord

from bridge.ports import ReplyEnding

PREFIX = "chat-bridge:"
STOP_ID = PREFIX + "stop"
VOTE_PREFIX = PREFIX + "vote:"
VOTE_IDS = {"up": VOTE_PREFIX + "up", "down": VOTE_PREFIX + "down"}


class Shown(StrEnum):
    """The buttons a reply's message carries."""

    NONE = "none"
    STOP = "stop"
    FEEDBACK = "feedback"


@dataclass(frozen=True, slots=True)
class ButtonsWanted:
    """What replies show (`streaming.stop_button`, `streaming.feedback_buttons`)."""

    stop: bool = True
    feedback: bool = True

    @property
    def any(self) -> bool:
        return self.stop or self.feedback

    def while_streaming(self) -> Shown:
        return Shown.STOP if self.stop else Shown.NONE

    def at_end(self, ending: ReplyEnding | None) -> Shown:
        """The last message of a reply: votes under an answer or a stopped reply, nothing under a
        failure (nor on a message that is only full, before the reply ends)."""
        answered = ending in (ReplyEnding.ANSWERED, ReplyEnding.STOPPED)
        return Shown.FEEDBACK if self.feedback and answered else Shown.NONE


class _Buttons(discord.ui.View):
    def __init__(self, shown: Shown) -> None:
        super().__init__(timeout=None)
        if shown is Shown.STOP:
            self.add_item(
                discord.ui.Button(style=discord.ButtonStyle.danger, label="Stop", custom_id=STOP_ID)
            )
        elif shown is Shown.FEEDBACK:
            for emoji, custom_id in (("👍", VOTE_IDS["up"]), ("👎", VOTE_IDS["down"])):
                self.add_item(
                    discord.ui.Button(
                        style=discord.ButtonStyle.secondary, emoji=emoji, custom_id=custom_id
                    )
                )

    def is_dispatchable(self) -> bool:
        # Not stored by discord.py (no timeout task, nothing routed to it): clicks go to the
        # adapter's listener, which outlives this process.
        return False


def view_of(shown: Shown) -> discord.ui.View | None:
    """What discord.py sends as the message's components; None sends none (removes them)."""
    return None if shown is Shown.NONE else _Buttons(shown)
