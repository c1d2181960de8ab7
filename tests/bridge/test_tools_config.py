"""The [mcp] section and the per-place choice of tools: errors name the key, overrides win."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.config import ConfigError, Settings, load_settings, secret_values, summary
from bridge.policy.effective import ReplySettings
from bridge.policy.origin import Origin
from bridge.policy.rules import Rules

SERVER = {"name": "docs", "command": "python", "args": ["-m", "docs_server"]}


def settings(**sections: Any) -> Settings:
    return load_settings(None, {}, values=sections)


def problems(**sections: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        settings(**sections)
    return caught.value.problems


def test_a_server_needs_exactly_one_transport_and_a_unique_name() -> None:
    both = {"name": "x", "command": "a", "url": "http://127.0.0.1:1/mcp"}
    assert any(p.startswith("mcp.servers.0.command") for p in problems(mcp={"servers": [both]}))
    neither = {"name": "x"}
    assert any(p.startswith("mcp.servers.0.command") for p in problems(mcp={"servers": [neither]}))
    twice = problems(mcp={"servers": [SERVER, SERVER]})
    assert any("servers.1.name: 'docs' is used twice" in p for p in twice)
    bad_name = problems(mcp={"servers": [{**SERVER, "name": "my docs"}]})
    assert any(p.startswith("mcp.servers.0.name") for p in bad_name)
    headers_on_stdio = problems(mcp={"servers": [{**SERVER, "headers": {"A": "b"}}]})
    assert any(p.startswith("mcp.servers.0.headers") for p in headers_on_stdio)


def test_tool_names_must_name_a_declared_server() -> None:
    found = problems(
        mcp={"servers": [SERVER], "default_tools": ["docs.*", "web.fetch"]},
        overrides=[{"channel": "C1", "tools": ["nope.*"]}],
    )
    assert "mcp.default_tools: 'web.fetch' names no server in [[mcp.servers]]" in found
    assert "overrides.0.tools: 'nope.*' names no server in [[mcp.servers]]" in found
    malformed = problems(mcp={"servers": [SERVER], "default_tools": ["docs"]})
    assert any(p.startswith("mcp.default_tools.0") for p in malformed)


def test_the_override_of_a_place_chooses_its_tools() -> None:
    rules = Rules(
        settings(
            mcp={"servers": [SERVER], "default_tools": ["docs.search"]},
            overrides=[{"channel": "C9", "tools": []}, {"channel": "C8", "tools": ["docs.*"]}],
        )
    )

    def tools_at(channel: str) -> tuple[str, ...]:
        origin = Origin(platform="slack", workspace="T1", channel=channel, user="U1")
        return rules.resolve(origin, {}).reply.tools

    assert tools_at("C1") == ("docs.search",)
    assert tools_at("C9") == ()
    assert tools_at("C8") == ("docs.*",)
    # No server: nothing is offered whatever default_tools says.
    assert Rules(settings()).defaults.reply.tools == ()


def test_the_tools_a_message_was_admitted_with_are_stored_and_read_back() -> None:
    default = ReplySettings("m", "p", 0.7, 4096, 8000, 1, True, 1.0, ("*",))
    stored = ReplySettings("m", "p", 0.7, 4096, 8000, 1, True, 1.0, ("docs.search",)).to_dict()
    assert ReplySettings.from_dict({**stored, "tools": ["docs.search"]}, default).tools == (
        "docs.search",
    )
    assert ReplySettings.from_dict({**stored, "tools": "oops"}, default).tools == ("*",)
    assert ReplySettings.from_dict({}, default).tools == ("*",)


def test_server_secrets_are_known_secrets_and_never_in_the_summary() -> None:
    server = {
        "name": "tickets",
        "url": "https://mcp.example.com/mcp",
        "headers": {"Authorization": "Bearer tok-123456789"},
    }
    loaded = settings(
        mcp={"servers": [server, {**SERVER, "env": {"API_KEY": "key-abcdefgh"}}]},
        storage={"url": "postgresql+asyncpg://bridge:db-pass-1234@db/bridge"},
    )
    found = secret_values(loaded)
    assert {"Bearer tok-123456789", "key-abcdefgh", "db-pass-1234"} <= set(found)
    text = "\n".join(summary(loaded))
    assert "mcp: tickets (http), docs (stdio)" in text
    assert all(secret not in text for secret in found)


def test_the_settings_command_shows_a_places_tools_and_where_they_came_from() -> None:
    rules = Rules(
        settings(
            mcp={"servers": [SERVER]},
            overrides=[{"channel": "C9", "tools": ["docs.search", "docs.fetch"]}],
        )
    )
    origin = Origin(platform="slack", workspace="T1", channel="C9", user="U1")
    rows = {key: (value, source) for key, value, source in rules.resolve(origin, {}).shown()}
    assert rows["tools"] == ("docs.search, docs.fetch", "override channel C9")
    elsewhere = Origin(platform="slack", workspace="T1", channel="C1", user="U1")
    rows = {key: (value, source) for key, value, source in rules.resolve(elsewhere, {}).shown()}
    assert rows["tools"] == ("*", "defaults")
