"""One user message and the bot's reply to it, as the sandbox watches it on a platform.

`Stage` is what each emulated platform offers the sandbox: say something as a person, and read
back what the platform shows. `Exchange` collects the timings a person would notice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bridge.domain import ChatKey, TokenUsage

# "channel": a new message naming the bot; "thread": a follow-up in the platform's latest
# conversation (its thread, or the DM), without naming the bot; "dm": a direct message.
Where = Literal["channel", "thread", "dm"]


@dataclass(frozen=True, slots=True)
class ReplyState:
    """What the platform shows of one reply right now."""

    indicator: str = ""  # "chat-bridge is typing…", or "" when no indicator shows
    texts: tuple[str, ...] = ()  # each bot message of the reply, in order
    message_ids: tuple[str, ...] = ()  # the platform's ids of those messages


@dataclass(frozen=True, slots=True)
class PlatformCounts:
    """What the bot asked of a platform, as its emulator counted it."""

    calls: dict[str, int]  # Web API methods (Slack) or REST routes (Discord)
    edits: int  # successful message edits and stream appends
    rate_limited: int  # 429 answers


@dataclass(eq=False)
class Exchange:
    platform: str
    where: Where
    prompt: str
    key: ChatKey  # the bridge's chat, to read the stored reply back
    user_message_id: str  # the platform's id of the user's message
    place_id: str  # where the reply shows: a Slack thread ts, a Discord channel or thread id
    sent_at: float
    state: ReplyState = field(default_factory=ReplyState)
    indicator_at: float | None = None
    placeholder_at: float | None = None
    first_text_at: float | None = None
    changed_at: float | None = None  # the latest visible change of the reply
    updates: int = 0  # how often the reply's text changed on screen
    done_at: float | None = None
    status: str = ""  # the stored reply's final status ("complete", "failed", ...)
    error: str | None = None
    final_texts: tuple[str, ...] = ()
    usage: TokenUsage | None = None

    @property
    def done(self) -> bool:
        return self.done_at is not None

    def observe(self, state: ReplyState, now: float, placeholder: str) -> bool:
        """Record a new visible state; True when it differs from the previous one."""
        if state == self.state:
            return False
        if state.texts != self.state.texts:
            self.updates += 1
        self.state = state
        self.changed_at = now
        if state.indicator and self.indicator_at is None:
            self.indicator_at = now
        if state.texts and self.placeholder_at is None:
            self.placeholder_at = now
        has_text = any(text.strip() and text != placeholder for text in state.texts)
        if has_text and self.first_text_at is None:
            self.first_text_at = now
        return True

    def since_sent(self, at: float | None) -> float | None:
        return None if at is None else at - self.sent_at


class Stage(Protocol):
    """One emulated platform with one person (alice) on it, and the bot."""

    name: str
    bot_name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def bridge_settings(self) -> dict[str, Any]:
        """The platform's section of the bridge's Settings, pointing at the emulator."""
        ...

    async def say(self, where: Where, text: str, image: bytes | None = None) -> Exchange:
        """Post as alice, with `image` (a PNG) attached if given; raises LookupError for
        "thread" before any conversation exists."""
        ...

    async def press_stop(self, exchange: Exchange) -> None:
        """Alice presses the Stop button of the reply while it streams (or, where the reply
        shows none, reacts to it with 🛑)."""
        ...

    def state(self, exchange: Exchange, now: float, after: str | None) -> ReplyState:
        """What shows of the reply: the bot's messages in its place after the user's message
        and after `after` (the last message of the previous reply in that place, if any)."""
        ...

    def label(self, exchange: Exchange) -> str:
        """Where the reply shows, for people: "#general › thread 1", "DM with alice"."""
        ...

    def subscribe(self, on_change: Callable[[], None], on_note: Callable[[str], None]) -> None:
        """`on_change` after every visible change; `on_note` for what happens beside replies
        (a thread renamed, a title set)."""
        ...

    def counts(self) -> PlatformCounts: ...
