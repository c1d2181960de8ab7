"""Reading a thread's earlier messages: roles, what is left out, and pagination (emulator)."""

from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.events import BotIdentity
from adapters.slack.history import history_entries, thread_history
from bridge.domain import HistoryEntry, Role
from sandbox.slack_emulator import SlackEmulator

BOT = BotIdentity(user_id="U0BOT", bot_id="B0BOT", team_id="T0TEAM")


def test_own_messages_are_the_assistant_and_everyone_else_the_user() -> None:
    messages = [
        {"ts": "10.000001", "user": "U0BOB", "text": "root &amp; question"},
        {"ts": "10.000002", "user": "U0BOT", "bot_id": "B0BOT", "text": "my answer"},
        {"ts": "10.000003", "bot_id": "B0CI", "subtype": "bot_message", "text": "build ok"},
        {"ts": "10.000004", "user": "U0ALICE", "subtype": "channel_join", "text": "joined"},
        {"ts": "10.000005", "user": "U0ALICE", "text": ""},
        {"ts": "10.000006", "user": "U0ALICE", "text": "<@U0BOT> the mention itself"},
        {"ts": "10.000007", "user": "U0ALICE", "text": "after the mention"},
    ]
    assert history_entries(messages, BOT, before_ts="10.000006") == [
        HistoryEntry(Role.USER, "root & question", "U0BOB", "10.000001"),
        HistoryEntry(Role.ASSISTANT, "my answer", "U0BOT", "10.000002"),
        HistoryEntry(Role.USER, "build ok", "B0CI", "10.000003"),
    ]


def test_timestamps_compare_as_numbers() -> None:
    messages = [{"ts": "9.900000", "user": "U0BOB", "text": "older"}]
    assert [e.content for e in history_entries(messages, BOT, before_ts="10.000000")] == ["older"]
    assert history_entries(messages, BOT, before_ts="9.000001") == []


async def test_a_long_thread_is_read_page_by_page() -> None:
    async with SlackEmulator() as emu:
        emu.echo_own_messages = False
        root = await emu.user_message("C0GENERAL", "message 0", user="U0BOB")
        for number in range(1, 7):
            await emu.user_message("C0GENERAL", f"message {number}", thread_ts=root)
        mention = await emu.user_message("C0GENERAL", "<@U0BOT> sum up", thread_ts=root)
        client = AsyncWebClient(token="xoxb-test", base_url=emu.api_base_url)
        entries = await thread_history(
            client, channel="C0GENERAL", thread_ts=root, before_ts=mention, bot=BOT, page_size=3
        )
    assert [e.content for e in entries] == [f"message {n}" for n in range(7)]
    assert emu.stats.calls["conversations.replies"] == 3
