"""`chat-bridge sandbox` end to end: the real bridge in-process against the emulators, the script
on both platforms, what each platform finally shows, the summary, and the interactive commands."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator

import pytest

from bridge.cli import build_parser
from sandbox.answers import BACKOFF, INTRO, SCREENSHOT, STORY, TEAM_NAME, rate_limits
from sandbox.display import LogDisplay
from sandbox.interactive import Control, Invalid, Say, parse
from sandbox.runner import perform, run
from sandbox.session import Sandbox, SandboxOptions
from sandbox.slack_stage import DM, GENERAL

# 1,000 tokens/s: the whole script in a few seconds. The console on any free port: 9103 may be
# another run's.
FAST = SandboxOptions(speed=20, console_port=0)


def slack_replies(sandbox: Sandbox, channel: str, root: str) -> list[str]:
    emu = sandbox.slack.emu
    shown = emu.thread(channel, root)
    return [m.text for m in shown if m.user == emu.identity.bot_user_id and not m.is_streaming]


def discord_replies(sandbox: Sandbox, channel_id: int) -> list[str]:
    emu = sandbox.discord.emu
    return [m.content for m in emu.messages(channel_id) if m.author_id == emu.bot_user_id]


async def test_the_script_answers_on_both_platforms_and_sums_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The sandbox builds its own settings: a user's environment must not redirect it.
    monkeypatch.setenv("CHAT_BRIDGE_SLACK__API_BASE_URL", "http://127.0.0.1:9/api/")
    monkeypatch.setenv("CHAT_BRIDGE_STREAMING__EDIT_INTERVAL", "not a number")
    out = io.StringIO()
    sandbox = Sandbox(FAST, LogDisplay(out, placeholder="…"))

    assert await perform(sandbox) == 0

    shown = out.getvalue()
    assert "replies: 12 of 14 complete, 2 stopped (slack 7, discord 7) in 4 conversations" in shown
    assert shown.count("⏹ reply stopped by the user after") == 2
    assert re.search(r"tokens in / out +[\d,]+ / [\d,]+ +[\d,]+ / [\d,]+", shown), shown
    assert re.search(r"slack Web API calls by method:\n +\d+  ", shown)
    assert "discord REST calls by route:" in shown
    assert "wall time:" in shown

    exchanges = sandbox.tracker.exchanges
    slack = [e for e in exchanges if e.platform == "slack"]
    discord = [e for e in exchanges if e.platform == "discord"]
    thread, dm = slack[0].user_message_id, slack[6].user_message_id
    *answered, stopped, searched = slack_replies(sandbox, GENERAL, thread)
    assert answered == [INTRO, rate_limits("slack"), BACKOFF, SCREENSHOT]
    # The story was stopped halfway: its text so far, then the notice.
    told, notice = stopped.rsplit("\n\n", 1)
    assert notice == "⏹️ _Stopped._" and STORY.startswith(told.rstrip()) and len(told) < len(STORY)
    # The docs question: the model called the bundled MCP server's search_docs.
    assert "sandbox" in searched.lower() and searched.endswith("🔧 _Used `sandbox.search_docs`_")
    assert "tools    bundled MCP server `sandbox`" in shown
    # The admin console, with this run's password; it goes when the script ends.
    assert re.search(
        r"console  admin console at http://127\.0\.0\.1:\d+/ \(password: \S{16}\)", shown
    )
    assert "it closes when the sandbox exits (-i keeps it)" in shown
    assert slack_replies(sandbox, DM, dm) == [TEAM_NAME]
    assert sandbox.slack.emu.titles[(DM, dm)] == "Naming the team bot"

    opened = int(discord[0].user_message_id)  # the bot's thread takes the mention's id
    # On a busy machine Stop may come after the story filled a message: it then continues in
    # further ones, the last with the notice.
    replies = discord_replies(sandbox, opened)
    answers, (first_half, second_half, screenshot) = replies[:2], replies[2:5]
    story, searched_too = replies[5:-1], replies[-1]
    stopped = story[-1]
    assert answers == [INTRO, rate_limits("discord")]
    # Over Discord's 2,000 characters the reply continues in a second message, at a paragraph.
    assert max(len(first_half), len(second_half)) <= 2000
    assert f"{first_half}\n\n{second_half}" == BACKOFF
    assert screenshot == SCREENSHOT
    assert stopped.endswith("\n\n⏹️ _Stopped._") and sum(map(len, story)) < len(STORY)
    assert searched_too.endswith("🔧 _Used `sandbox.search_docs`_")
    assert discord_replies(sandbox, sandbox.discord.dm_id) == [TEAM_NAME]
    assert [t.name for t in sandbox.discord.emu.threads] == ["What chat-bridge does"]

    statuses = [e.status for e in slack + discord]
    assert statuses == ["complete"] * 4 + ["stopped", "complete", "complete"] + ["complete"] * 4 + [
        "stopped",
        "complete",
        "complete",
    ]
    # The image went to the model as an image part: its answer is the screenshot's.
    # What the terminal showed as the end of each reply is what the platform shows.
    expected = [(INTRO,), (rate_limits("slack"),), (BACKOFF,), (SCREENSHOT,)]
    assert [e.final_texts for e in slack[:4]] == expected
    assert slack[6].final_texts == (TEAM_NAME,)


async def test_a_reply_that_does_not_finish_in_time_fails_with_one_clear_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = await run(SandboxOptions(reply_timeout=0.2, console_port=0), io.StringIO(), live=False)

    assert code == 1
    error = capsys.readouterr().err.splitlines()[0]
    assert re.match(r"error: (slack|discord): the reply in .+ did not finish within 0.2 s", error)


async def typed(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line + "\n"


async def test_interactive_lines_reach_the_bot_after_the_script() -> None:
    out = io.StringIO()
    options = SandboxOptions(speed=20, interactive=True, console_port=0)
    sandbox = Sandbox(options, LogDisplay(out, placeholder="…"))
    lines = typed("help", "slack dm: hello", "and what is chat-bridge?", "discord: hi", "quit")

    assert await perform(sandbox, lines=lines) == 0

    typed_replies = sandbox.tracker.exchanges[14:]
    assert [(e.platform, e.where, e.prompt) for e in typed_replies] == [
        ("slack", "dm", "hello"),
        ("slack", "thread", "and what is chat-bridge?"),
        ("discord", "channel", "hi"),
    ]
    assert [e.final_texts[0][:24] for e in typed_replies] == [
        "Hello! I am the chat-bri",
        INTRO[:24],
        "Hello! I am the chat-bri",
    ]
    summary = "replies: 15 of 17 complete, 2 stopped (slack 9, discord 8) in 6 conversations"
    assert summary in out.getvalue()
    # Where to watch the replies live, again below the commands (the banner has scrolled away).
    console = sandbox.console
    assert console is not None
    reminder = (
        f"The console at {console.url} (password: {console.password}) shows the replies live."
    )
    assert out.getvalue().count(reminder) == 2  # as the conversation starts, and after `help`


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("slack: hello", Say("hello", "slack", "channel")),
        ("  Discord DM:  hi there ", Say("hi there", "discord", "dm")),
        ("slack thread: and then?", Say("and then?", "slack", "thread")),
        ("discord reply: more", Say("more", "discord", "thread")),
        ("slack channel: new topic", Say("new topic", "slack", "channel")),
        ("slack: a: b", Say("a: b", "slack", "channel")),
        ("what about tests?", Say("what about tests?")),
        ("slackers: unite", Say("slackers: unite")),
        ("help", Control("help")),
        ("?", Control("help")),
        ("stats", Control("stats")),
        ("quit", Control("quit")),
        ("/exit", Control("quit")),
        ("slack hello", Invalid("did you mean `slack: hello`? (type help)")),
        ("discord dm:", Invalid("nothing to say after `discord dm:` (type help)")),
        ("   ", None),
    ],
)
def test_typed_lines_parse_into_commands(line: str, command: object) -> None:
    assert parse(line) == command


def test_the_sandbox_command_needs_no_config_and_checks_its_options() -> None:
    args = build_parser().parse_args(["sandbox", "-i", "--speed", "2.5", "--model", "m"])
    assert (args.interactive, args.speed, args.model, args.llm_base_url) == (True, 2.5, "m", None)
    with pytest.raises(SystemExit) as refused:
        build_parser().parse_args(["sandbox", "--speed", "0"])
    assert refused.value.code == 2
