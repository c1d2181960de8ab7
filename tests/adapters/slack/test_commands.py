"""The admin slash command: `/chat-bridge <command> [argument]` reaches the core's admin commands,
acknowledged at once, answered only to the person who ran it."""

from __future__ import annotations

from adapters.slack.adapter import COMMAND_FAILED
from bridge.admin import NOT_ADMIN
from bridge.policy.origin import Origin
from tests.adapters.slack.conftest import BOT, DM, GENERAL, Factory

ADMINS = {"access": {"admins": ["U0ADMIN"]}}


async def test_an_admin_sets_the_model_of_a_channel_and_the_next_reply_uses_it(
    make_bridge: Factory, mode: str
) -> None:
    bridge = await make_bridge(mode=mode, sections=ADMINS)
    emu = bridge.emu
    run = await emu.slash_command("U0ADMIN", GENERAL, "/chat-bridge", "model  gpt-test")
    assert run.failure is None and run.ack_payload is None  # an empty acknowledgement
    await emu.wait_for(lambda: emu.ephemerals("U0ADMIN", GENERAL))

    [(origin, name, argument, answer)] = bridge.commands.calls
    assert origin == Origin("slack", "U0ADMIN", workspace="T0TEAM", channel=GENERAL)
    assert (name, argument) == ("model", "gpt-test")
    [shown] = emu.ephemerals("U0ADMIN", GENERAL)
    assert shown.source == "response_url" and shown.text == answer and "gpt-test" in answer
    assert emu.channel(GENERAL) == []  # nobody else sees anything

    ts = await emu.user_message(GENERAL, f"<@{BOT}> hi", user="U0ALICE")
    await bridge.reply_done(GENERAL, ts)
    assert [r["model"] for r in bridge.llm.requests if r.get("stream")] == ["gpt-test"]


async def test_no_name_unknown_names_and_non_admins_get_help_or_a_refusal(
    make_bridge: Factory,
) -> None:
    bridge = await make_bridge(sections=ADMINS, command="/bridge-admin")
    emu = bridge.emu
    for text in ("", "frobnicate now", "trigger always"):
        await emu.slash_command("U0ALICE", GENERAL, "/bridge-admin", text)
    await emu.wait_for(lambda: len(emu.ephemerals("U0ALICE", GENERAL)) == 3)
    assert [(name, argument) for _, name, argument, _ in bridge.commands.calls] == [
        ("help", ""),
        ("frobnicate", "now"),
        ("trigger", "always"),
    ]
    shown = [e.text for e in emu.ephemerals("U0ALICE", GENERAL)]
    assert shown[0].startswith("Commands:") and "`reset`" in shown[0]
    assert "`trigger" not in shown[0]  # admin commands are not listed for others
    assert shown[1].startswith("Unknown command `frobnicate`")
    assert shown[2] == NOT_ADMIN


async def test_a_command_in_a_dm_names_the_dm(make_bridge: Factory) -> None:
    bridge = await make_bridge(sections=ADMINS)
    await bridge.emu.slash_command("U0ADMIN", DM, "/chat-bridge", "settings")
    await bridge.emu.wait_for(lambda: bridge.emu.ephemerals("U0ADMIN", DM))
    origin = bridge.commands.calls[0][0]
    assert origin.is_dm and origin.channel == DM and origin.thread == ""
    assert bridge.emu.ephemerals("U0ADMIN", DM)[0].text.startswith("Effective settings here")


async def test_a_slow_command_is_acknowledged_in_time_and_answered_later(
    make_bridge: Factory, mode: str
) -> None:
    bridge = await make_bridge(mode=mode, sections=ADMINS)
    emu = bridge.emu
    emu.ack_timeout = 0.3
    bridge.commands.delay = 0.6  # a slow database
    run = await emu.slash_command("U0ADMIN", GENERAL, "/chat-bridge", "usage")
    assert run.failure is None  # no "operation_timeout" for the person
    assert emu.ephemerals("U0ADMIN", GENERAL) == []
    [shown] = await emu.wait_for(lambda: emu.ephemerals("U0ADMIN", GENERAL), timeout=5)
    assert shown.text.startswith("Tokens today") and shown.source == "response_url"


async def test_an_answer_reads_as_written_and_pings_nobody(make_bridge: Factory) -> None:
    bridge = await make_bridge(sections=ADMINS)
    emu = bridge.emu
    await emu.slash_command("U0ADMIN", GENERAL, "/chat-bridge", "prompt Say <!here> & <@U0BOB>")
    [shown] = await emu.wait_for(lambda: emu.ephemerals("U0ADMIN", GENERAL))
    [(_, name, argument, answer)] = bridge.commands.calls
    # Slack escapes &, < and > in the command's text; the core gets what was typed.
    assert (name, argument) == ("prompt", "Say <!here> & <@U0BOB>")
    assert "<!here>" in answer
    assert "&lt;!here&gt; &amp; &lt;@U0BOB&gt;" in shown.text and "<" not in shown.text


async def test_a_failing_command_still_answers(make_bridge: Factory) -> None:
    bridge = await make_bridge(sections=ADMINS)
    emu = bridge.emu

    async def broken(*args: object) -> None:
        raise RuntimeError("database on fire")

    bridge.store.usage_report = broken  # type: ignore[method-assign,assignment]
    await emu.slash_command("U0ADMIN", GENERAL, "/chat-bridge", "usage")
    [shown] = await emu.wait_for(lambda: emu.ephemerals("U0ADMIN", GENERAL))
    assert shown.text == COMMAND_FAILED
