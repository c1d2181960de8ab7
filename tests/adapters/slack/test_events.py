"""Which Slack events become an InboundMessage, and with which chat key (pure, no I/O)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from adapters.slack.events import BotIdentity, parse_assistant_thread, parse_message, prompt_text
from bridge.domain import ChatKey

BOT = BotIdentity(user_id="U0BOT", bot_id="B0BOT", team_id="T0TEAM")


def body(event_id: str = "Ev01", team: str = "T0TEAM", **event: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "type": "message",
        "channel": "C0GENERAL",
        "user": "U0ALICE",
        "text": "hello",
        "ts": "1700000000.000100",
        "channel_type": "channel",
    }
    fields.update(event)
    fields = {key: value for key, value in fields.items() if value is not None}
    return {"type": "event_callback", "team_id": team, "event_id": event_id, "event": fields}


def parse(payload: dict[str, Any], *, ignore_other_bots: bool = True) -> Any:
    return parse_message(payload, BOT, ignore_other_bots=ignore_other_bots)


def test_a_mention_starts_a_thread_keyed_by_its_own_ts() -> None:
    message = parse(body(type="app_mention", text="<@U0BOT> hi &lt;3", channel_type=None))
    assert message.inbound.chat_key == ChatKey("slack", "T0TEAM", "C0GENERAL", "1700000000.000100")
    assert message.inbound.event_id == "Ev01"
    assert message.inbound.platform_message_id == "1700000000.000100"
    assert message.inbound.text == "hi <3"  # the mention removed, Slack's escapes undone
    assert message.mentions_bot and not message.is_dm and not message.in_existing_thread


def test_the_message_twin_of_a_mention_maps_to_the_same_chat_and_message() -> None:
    mention = parse(body("Ev01", type="app_mention", text="<@U0BOT> hi", channel_type=None))
    twin = parse(body("Ev02", text="<@U0BOT> hi"))
    assert twin.mentions_bot
    assert twin.inbound.chat_key == mention.inbound.chat_key
    assert twin.inbound.platform_message_id == mention.inbound.platform_message_id
    assert twin.inbound.event_id != mention.inbound.event_id


def test_a_reply_in_a_thread_joins_that_thread() -> None:
    message = parse(body(thread_ts="1700000000.000001", text="and then?"))
    assert message.inbound.chat_key.thread == "1700000000.000001"
    assert message.in_existing_thread and not message.mentions_bot


def test_a_dm_is_recognised_and_answers_go_to_its_recipients() -> None:
    message = parse(body(channel="D0ALICE", channel_type="im", user_team="T0OTHER"))
    assert message.is_dm and message.recipient_team == "T0OTHER"
    assert message.inbound.author_id == "U0ALICE"


@pytest.mark.parametrize(
    "event",
    [
        {"user": "U0BOT"},  # the bot itself
        {"bot_id": "B0BOT", "subtype": "bot_message", "user": None},
        {"bot_id": "B0OTHER", "subtype": "bot_message", "user": None},  # another bot
        {"bot_id": "B0OTHER"},  # an app posting as a user, still a bot
        {"subtype": "message_changed"},
        {"subtype": "message_deleted"},
        {"subtype": "channel_join"},
        {"subtype": "assistant_app_thread"},
        {"hidden": True},
        {"text": "   "},
    ],
)
def test_messages_that_are_not_a_persons_text_are_ignored(event: dict[str, Any]) -> None:
    assert parse(body(**event)) is None


def test_other_bots_are_answered_when_allowed() -> None:
    event = body(bot_id="B0OTHER", subtype="bot_message", user=None, text="status: green")
    message = parse(event, ignore_other_bots=False)
    assert message is not None and message.inbound.author_id == "B0OTHER"
    own = body(bot_id="B0BOT", subtype="bot_message", user=None)
    assert parse(own, ignore_other_bots=False) is None  # never itself


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (body(channel="#general"), "channel"),
        (body(channel="C0GENERAL\nforged log line"), "channel"),
        (body(channel="C0GENERAL\n"), "channel"),
        (body(user="U0ALICE\n"), "author"),
        (body(ts="1700000000"), "ts"),
        (body(thread_ts="../../etc"), "thread_ts"),
        (body(user="alice"), "author"),
        (body(event_id="Ev 01; drop table"), "event_id"),
        (body(team="TEAM!"), "team_id"),
        (body(text=["not", "a", "string"]), "text"),
        (body(text="x" * 40_001), "text"),
        ({"type": "event_callback", "event": "nope"}, "not a message"),
        ({"event": {"type": "message", "channel": "C0GENERAL"}}, "event_id"),
    ],
)
def test_malformed_or_hostile_events_are_dropped_with_a_warning(
    payload: dict[str, Any], why: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="adapters.slack.events"):
        assert parse(payload) is None
    [record] = caplog.records
    assert why in record.getMessage() and "\n" not in record.getMessage()


def test_prompt_text_keeps_other_mentions_and_a_bare_mention() -> None:
    assert prompt_text("<@U0BOT|bot> ask <@U0BOB>", "U0BOT") == "ask <@U0BOB>"
    assert prompt_text("<@U0BOT>", "U0BOT") == "<@U0BOT>"
    assert prompt_text("a &amp;lt; b", "U0BOT") == "a &lt; b"


def test_assistant_thread_started_gives_the_chat_of_the_new_thread() -> None:
    thread = {"channel_id": "D0ALICE", "thread_ts": "1.000002"}
    started = {"team_id": "T0TEAM", "event": {"type": "assistant_thread_started",
                                              "assistant_thread": thread}}  # fmt: skip
    assert parse_assistant_thread(started) == ChatKey("slack", "T0TEAM", "D0ALICE", "1.000002")
    broken = {"team_id": "T0TEAM", "event": {"assistant_thread": {"channel_id": "x"}}}
    assert parse_assistant_thread(broken) is None
