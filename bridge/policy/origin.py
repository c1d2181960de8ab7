"""Where a message comes from and who wrote it: the facts the policy needs, supplied by adapters.

Platform-free: each adapter fills it from its own events (Slack team/channel/thread, Discord
guild/category/channel/thread and the author's roles).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Origin:
    platform: str
    user: str
    # Slack team id or Discord guild id; "" in a Discord DM.
    workspace: str = ""
    # The channel; for a message in a thread, the thread's channel (Discord: its parent).
    channel: str = ""
    # Discord: the thread's id. Slack: "<channel>/<thread_ts>" for a message in a thread.
    thread: str = ""
    # Discord: the category of the channel; "" when it has none (and on Slack).
    category: str = ""
    # Discord role ids of the author in the guild.
    roles: frozenset[str] = frozenset()
    is_dm: bool = False
    # The message calls on the bot: a mention, a DM, a reply to the bot, or a message in a
    # thread the bot takes part in. The default trigger ("mention") answers only those.
    addressed: bool = True

    @property
    def places(self) -> tuple[str, ...]:
        """Its place ids, most specific first: thread, channel, category."""
        return tuple(place for place in (self.thread, self.channel, self.category) if place)

    @property
    def scope(self) -> str:
        """The place an admin command here sets runtime settings for: the thread on Discord (a
        thread is a channel), else the channel."""
        return self.thread if self.thread and self.platform == "discord" else self.channel
