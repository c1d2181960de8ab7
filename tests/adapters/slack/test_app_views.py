"""Slack's AI-app views end to end: the assistant pane (assistant_thread_started), the agent view
(conversations from the Messages tab: app_home_opened), and neither."""

from __future__ import annotations

import json

import pytest

from adapters.slack import render_manifest
from bridge.config import Settings, SlackSettings
from bridge.domain import ChatKey
from tests.adapters.slack.conftest import DM, Factory

PROMPTS = ["Summarise this channel", "Draft a reply to the last message"]


async def test_the_assistant_view_greets_each_new_pane_thread(make_bridge: Factory) -> None:
    bridge = await make_bridge(app_view="assistant", suggested_prompts=PROMPTS)
    emu = bridge.emu
    thread = await emu.start_assistant_thread("U0ALICE", DM)
    await emu.open_messages_tab("U0ALICE", DM)  # not how this view starts conversations
    await bridge.settle()

    assert list(emu.suggested_prompts) == [(DM, thread)]
    assert await bridge.store.get_chat(ChatKey("slack", "T0TEAM", DM, thread)) is not None


async def test_the_agent_view_gives_the_messages_tab_its_prompts_and_answers_there(
    make_bridge: Factory, mode: str
) -> None:
    bridge = await make_bridge(mode=mode, app_view="agent", suggested_prompts=PROMPTS)
    emu = bridge.emu
    await emu.open_messages_tab("U0ALICE", DM)
    await emu.open_messages_tab("U0ALICE", DM)  # opened again: the prompts are still there
    await bridge.settle()

    [call] = emu.calls_to("assistant.threads.setSuggestedPrompts")
    assert call.ok and "thread_ts" not in call.args  # they sit at the top of the tab
    assert [p["message"] for p in emu.suggested_prompts[(DM, None)]["prompts"]] == PROMPTS

    # The person clicks a prompt: a top-level message in the tab, answered in its own thread,
    # and a follow-up in that thread continues the same conversation.
    question = await emu.user_message(DM, PROMPTS[0], user="U0ALICE")
    await bridge.reply_done(DM, question)
    follow_up = await emu.user_message(DM, "shorter please", user="U0ALICE", thread_ts=question)
    await bridge.reply_done(DM, question, replies=2)
    assert [m.rendered for m in bridge.bot_messages(DM, question)] == [
        f"You said: {PROMPTS[0]}",
        "You said: shorter please",
    ]
    assert bridge.llm_turns()[-1] == ("user", "shorter please")
    assert [turn for turn in bridge.llm_turns() if turn[0] == "user"][0][1] == PROMPTS[0]
    assert follow_up != question


async def test_the_agent_view_ignores_the_home_tab(make_bridge: Factory) -> None:
    bridge = await make_bridge(app_view="agent", suggested_prompts=PROMPTS)
    await bridge.emu.deliver(
        {
            "type": "app_home_opened",
            "user": "U0ALICE",
            "channel": DM,
            "tab": "home",
            "event_ts": "1.000001",
        }  # fmt: skip
    )
    await bridge.settle()
    assert "assistant.threads.setSuggestedPrompts" not in bridge.emu.stats.calls


async def test_with_no_view_the_pane_event_is_ignored_but_dms_are_answered(
    make_bridge: Factory,
) -> None:
    bridge = await make_bridge(app_view="off", suggested_prompts=PROMPTS)
    emu = bridge.emu
    thread = await emu.start_assistant_thread("U0ALICE", DM)
    await emu.open_messages_tab("U0ALICE", DM)
    await bridge.settle()
    assert "assistant.threads.setSuggestedPrompts" not in emu.stats.calls
    assert await bridge.store.get_chat(ChatKey("slack", "T0TEAM", DM, thread)) is None

    question = await emu.user_message(DM, "hello", user="U0ALICE")
    await bridge.reply_done(DM, question)
    assert [m.rendered for m in bridge.bot_messages(DM, question)] == ["You said: hello"]


@pytest.mark.parametrize(
    ("view", "feature", "events", "absent"),
    [
        ("assistant", "assistant_view", {"assistant_thread_started"}, {"app_home_opened"}),
        ("agent", "agent_view", {"app_home_opened", "agent_session_stopped"},
         {"assistant_thread_started", "assistant_thread_context_changed"}),
        ("off", None, set(), {"assistant_thread_started", "app_home_opened"}),
    ],
)  # fmt: skip
def test_the_manifest_follows_the_view(
    view: str, feature: str | None, events: set[str], absent: set[str]
) -> None:
    settings = Settings(slack=SlackSettings(app_view=view, suggested_prompts=PROMPTS))  # type: ignore[arg-type]
    manifest = json.loads(render_manifest(settings))
    features = manifest["features"]
    views = {name for name in ("assistant_view", "agent_view") if name in features}
    assert views == ({feature} if feature else set())
    if feature:
        prefix = feature.removesuffix("_view")
        assert features[feature][f"{prefix}_description"]
        assert [p["message"] for p in features[feature]["suggested_prompts"]] == PROMPTS
    bot_events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert events <= bot_events and not absent & bot_events
    scopes = manifest["oauth_config"]["scopes"]["bot"]
    assert ("assistant:write" in scopes) is (view != "off")
