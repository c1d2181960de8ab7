"""The chat-bridge command as a user runs it: a real subprocess with a clean environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def chat_bridge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_BRIDGE_")}
    clean.pop("OPENAI_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_on_the_example_prints_a_summary() -> None:
    result = chat_bridge("check", "--config", "config.example.toml")
    assert result.returncode == 0, result.stderr
    assert "platforms: none enabled" in result.stdout
    assert "storage: sqlite+aiosqlite:///./chat-bridge.db" in result.stdout


def test_check_on_a_broken_file_lists_each_problem(tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text("[slack]\nenabled = true\nhttp_port = 'x'\nfoo = 1\n")
    result = chat_bridge("check", "--config", str(config))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    expected = "error: slack.http_port: Input should be a valid integer, unable to parse string"
    assert any(line.startswith(expected) for line in lines)
    assert "error: slack.foo: Extra inputs are not permitted" in lines
    assert result.stdout == ""


def test_check_names_the_key_of_each_policy_problem(tmp_path: Path) -> None:
    config = tmp_path / "policy.toml"
    config.write_text(
        "[access]\nadmins = [123456789012345678]\n"
        '[[overrides]]\nchannel = "C1"\ntrigger = "sometimes"\n'
        '[[overrides]]\nchannel = "C2"\nthread = "C2/1.2"\n'
    )
    result = chat_bridge("check", "--config", str(config))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert "error: access.admins.0: Input should be a valid string" in lines
    assert "error: overrides.0.trigger: Input should be 'mention', 'always' or 'off'" in lines
    assert any(
        line.startswith("error: overrides.1.thread: an override needs exactly one of workspace, "
                        "channel or thread (found: channel, thread)")
        for line in lines
    )  # fmt: skip


def test_check_summarises_the_policy(tmp_path: Path) -> None:
    config = tmp_path / "policy.toml"
    config.write_text(
        '[access]\nadmins = ["U1"]\nallowed_channels = ["C1", "C2"]\n'
        "[limits]\nuser_daily_tokens = 50000\n"
        '[[overrides]]\nchannel = "C1"\ntrigger = "always"\n'
    )
    result = chat_bridge("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "access: 1 admins, allowed_channels 2" in result.stdout
    assert "limits: user_daily_tokens 50000" in result.stdout
    assert "overrides: 1 (channel 1)" in result.stdout


def test_check_masks_secrets(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[discord]\nenabled = true\n[llm]\nbase_url = 'http://127.0.0.1:9/v1'\n")
    result = chat_bridge(
        "check",
        "--config",
        str(config),
        env={"CHAT_BRIDGE_DISCORD__TOKEN": "MTIzNDU2.secret.value"},
    )
    assert result.returncode == 0, result.stderr
    assert "secret.value" not in result.stdout
    assert "discord: api https://discord.com/api/v10" in result.stdout


def test_run_without_a_platform_explains_itself() -> None:
    result = chat_bridge("run", "--config", "config.example.toml")
    assert result.returncode == 2
    assert "no platform is enabled" in result.stderr


def test_every_command_has_help() -> None:
    for command in ("run", "check", "migrate", "slack-manifest", "discord-invite"):
        result = chat_bridge(command, "--help")
        assert result.returncode == 0 and "--config FILE" in result.stdout


def test_migrate_creates_the_database(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    config = tmp_path / "c.toml"
    config.write_text(f'[storage]\nurl = "sqlite+aiosqlite:///{db}"\n')
    result = chat_bridge("migrate", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "database at revision 0011" in result.stdout
    assert db.exists()


def test_discord_invite_prints_the_url_for_the_tokens_application() -> None:
    # A bot token's first segment is the base64 of the bot's (= the application's) id.
    token = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789AB"
    result = chat_bridge(
        "discord-invite",
        "--config",
        "config.example.toml",
        env={"CHAT_BRIDGE_DISCORD__TOKEN": token},
    )
    assert result.returncode == 0, result.stderr
    assert "client_id=123456789012345678" in result.stdout
    assert (
        "scope=bot+applications.commands" in result.stdout or "bot%20applications" in result.stdout
    )


def test_slack_manifest_matches_the_mode() -> None:
    import json

    result = chat_bridge("slack-manifest", "--config", "config.example.toml")
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert "app_mention" in manifest["settings"]["event_subscriptions"]["bot_events"]


def test_tools_lists_each_servers_tools_and_says_which_cannot_be_reached(tmp_path: Path) -> None:
    config = tmp_path / "tools.toml"
    config.write_text(
        "[[mcp.servers]]\n"
        f'name = "sandbox"\ncommand = "{sys.executable}"\nargs = ["-m", "sandbox.mcp_server"]\n'
        "[[mcp.servers]]\n"
        'name = "tickets"\nurl = "http://127.0.0.1:9/mcp"\n'
        'headers = { Authorization = "Bearer tok-secret-123456" }\n'
    )
    result = chat_bridge("tools", "--config", str(config))
    assert result.returncode == 1, result.stderr  # a server could not be reached
    lines = result.stdout.splitlines()
    assert lines[0] == "sandbox (stdio): 3 tools"
    assert [line.split(":")[0].strip() for line in lines[1:4]] == [
        "sandbox.now",
        "sandbox.calculate",
        "sandbox.search_docs",
    ]
    assert lines[4].startswith("tickets (http): unavailable:")
    assert "tok-secret" not in result.stdout + result.stderr

    empty = tmp_path / "none.toml"
    empty.write_text("")
    result = chat_bridge("tools", "--config", str(empty))
    assert result.returncode == 0 and "no [[mcp.servers]]" in result.stdout
