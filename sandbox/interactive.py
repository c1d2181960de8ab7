"""`--interactive`: after the script, a person types as alice on Slack or Discord.

`parse` turns one typed line into a command (pure, tested on its own); `converse` runs them until
`quit`, end of input (Ctrl-D) or Ctrl-C, without waiting for a reply before reading on.
"""

from __future__ import annotations

import asyncio
import re
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from sandbox.exchange import Exchange, Where

if TYPE_CHECKING:
    from sandbox.session import Sandbox

Lines = AsyncIterator[str]
ACCEPT_WAIT = 5.0  # seconds for the bridge to take a message before the next one goes out
Platform = Literal["slack", "discord"]

HELP = [
    "Type as alice; the bot answers on the platform you name:",
    "  slack: TEXT            a new message in Slack #general naming the bot (a new thread)",
    "  slack thread: TEXT     a follow-up in the latest Slack thread, without naming the bot",
    "  slack dm: TEXT         a direct message to the bot on Slack",
    "  discord: TEXT          the same on Discord (the bot answers in a new thread)",
    "  discord thread: TEXT   a follow-up in the latest Discord thread or DM",
    "  discord dm: TEXT       a direct message to the bot on Discord",
    "  TEXT                   continues wherever you wrote last",
    "  stats                  the summary so far;  help  this list;  quit, Ctrl-D or Ctrl-C  exit",
]

_ADDRESSED = re.compile(
    r"^(?P<platform>slack|discord)(?:\s+(?P<where>dm|thread|reply|channel))?\s*:(?P<text>.*)$",
    re.IGNORECASE | re.DOTALL,
)
_WHERE: dict[str, Where] = {"dm": "dm", "thread": "thread", "reply": "thread", "channel": "channel"}
_CONTROLS = {
    "help": "help",
    "?": "help",
    "stats": "stats",
    "summary": "stats",
    "quit": "quit",
    "exit": "quit",
    ":q": "quit",
}


@dataclass(frozen=True, slots=True)
class Say:
    """Post `text` as alice; no platform: continue wherever alice wrote last."""

    text: str
    platform: Platform | None = None
    where: Where = "thread"


@dataclass(frozen=True, slots=True)
class Control:
    name: Literal["help", "stats", "quit"]


@dataclass(frozen=True, slots=True)
class Invalid:
    message: str


Command = Say | Control | Invalid


def parse(line: str) -> Command | None:
    """One typed line as a command; None for a blank line."""
    stripped = line.strip()
    if not stripped:
        return None
    control = _CONTROLS.get(stripped.lower().lstrip("/"))
    if control == "help":
        return Control("help")
    if control == "stats":
        return Control("stats")
    if control == "quit":
        return Control("quit")
    match = _ADDRESSED.match(stripped)
    if match is None:
        first, _, rest = stripped.partition(" ")
        if first.lower() in ("slack", "discord") and rest:
            return Invalid(f"did you mean `{first.lower()}: {rest.strip()}`? (type help)")
        return Say(stripped)
    platform: Platform = "slack" if match["platform"].lower() == "slack" else "discord"
    where = _WHERE[(match["where"] or "channel").lower()]
    text = match["text"].strip()
    if not text:
        return Invalid(f"nothing to say after `{stripped}` (type help)")
    return Say(text, platform, where)


async def converse(sandbox: Sandbox, lines: Lines) -> None:
    """Run typed commands until quit or the end of input."""
    display = sandbox.display
    console = sandbox.console
    # The banner has scrolled away by now: where to watch the replies live, again.
    help_lines = HELP + (
        [f"The console at {console.url} (password: {console.password}) shows the replies live."]
        if console is not None
        else []
    )
    display.write_lines(["", *help_lines])
    latest: Platform | None = None
    previous: dict[Platform, Exchange] = {}
    display.prompt()
    async for line in lines:
        display.input_received()
        command = parse(line)
        if isinstance(command, Control) and command.name == "quit":
            return
        if isinstance(command, Control):
            display.write_lines(help_lines if command.name == "help" else sandbox.report())
        elif isinstance(command, Invalid):
            display.note(command.message)
        elif isinstance(command, Say):
            platform = command.platform or latest
            if platform is None:
                display.note("say where first: `slack: TEXT` or `discord: TEXT` (type help)")
            else:
                before = previous.get(platform)
                if before is not None:
                    # A person cannot type faster than the bridge takes messages: keep order.
                    await sandbox.tracker.wait_accepted(before, ACCEPT_WAIT)
                try:
                    stage = sandbox.stage(platform)
                    previous[platform] = await sandbox.tracker.say(
                        stage, command.where, command.text
                    )
                    latest = platform
                except LookupError as exc:
                    display.note(str(exc))
        display.prompt()


async def stdin_lines() -> Lines:
    """Lines typed on standard input, read by a daemon thread.

    A daemon thread, not `asyncio.to_thread`: a read blocked on the terminal cannot be
    cancelled, and the default executor would hold the process open at exit until Enter.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        try:
            for line in sys.stdin:
                loop.call_soon_threadsafe(queue.put_nowait, line)
            loop.call_soon_threadsafe(queue.put_nowait, None)
        except RuntimeError:
            return  # the loop closed while a line was being typed: nobody is listening

    threading.Thread(target=read, name="sandbox-stdin", daemon=True).start()
    while (line := await queue.get()) is not None:
        yield line
