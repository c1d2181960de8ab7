"""What one instance hands another (`[cluster]`) comes back as the same message, through JSON;
a payload of another version is refused, not half read."""

from __future__ import annotations

import json

import pytest

from adapters.discord import handoff as discord_handoff
from adapters.slack import handoff as slack_handoff
from adapters.slack.events import SlackMessage
from bridge.domain import ChatKey, InboundMessage
from bridge.policy.origin import Origin


def test_a_slack_message_survives_the_trip() -> None:
    message = SlackMessage(
        inbound=InboundMessage(
            "Ev1", ChatKey("slack", "T1", "C1", "1.0"), "U1", "hi <b> & ünïcode", "1.5"
        ),
        team="T1",
        channel="C1",
        ts="1.5",
        thread_ts="1.0",
        is_dm=False,
        mentions_bot=True,
        recipient_team="T2",
    )
    wire = json.loads(json.dumps(slack_handoff.to_payload(message)))
    assert slack_handoff.from_payload(wire) == message


def test_a_discord_message_survives_the_trip() -> None:
    handed = discord_handoff.HandedMessage(
        inbound=InboundMessage(
            "message:9", ChatKey("discord", "7", "9"), "42", "hello", "9", author_name="alice"
        ),
        origin=Origin(
            "discord",
            "42",
            workspace="7",
            channel="8",
            thread="",
            category="6",
            roles=frozenset({"5", "4"}),
            is_dm=False,
            addressed=True,
        ),  # fmt: skip
        open_thread=True,
        guild_id=7,
        channel_id=8,
        message_id=9,
    )
    wire = json.loads(json.dumps(discord_handoff.to_payload(handed)))
    assert discord_handoff.from_payload(wire) == handed


@pytest.mark.parametrize("module", [slack_handoff, discord_handoff])
def test_a_payload_of_another_version_is_refused(module: object) -> None:
    with pytest.raises(ValueError, match="version"):
        module.from_payload({"v": 99})  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        module.from_payload({"v": 1})  # type: ignore[attr-defined]
