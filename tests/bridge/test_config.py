"""Configuration loading: the example file, env overrides, and the errors a user sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import ConfigError, load_settings, summary
from bridge.policy.settings import OverrideSettings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def problems(path: Path | None, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path, env or {})
    return info.value.problems


def test_example_file_is_valid_and_matches_the_defaults() -> None:
    settings = load_settings(EXAMPLE, {})
    assert settings.storage.url == "sqlite+aiosqlite:///./chat-bridge.db"
    assert settings.streaming.edit_interval == 1.0
    assert settings.enabled_platforms() == []
    assert settings.model_dump() == load_settings(None, {}).model_dump()


def test_example_file_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    settings = load_settings(None, {})
    for section_name, section in settings:
        if section_name == "overrides":
            assert "# [[overrides]]" in text
            for key in OverrideSettings.model_fields:
                assert key in text.split("# [[overrides]]", 1)[0].rsplit("[limits]", 1)[1], key
            continue
        assert f"[{section_name}]" in text
        for key in type(section).model_fields:
            assert f"\n{key} =" in text or f"# {key} =" in text or f" {key}:" in text, key


def test_env_overrides_file_and_secrets_come_from_env(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[slack]\nenabled = true\nhttp_port = 4000\n[llm]\nbase_url = "http://x/v1"\n'
    )
    env = {
        "CHAT_BRIDGE_SLACK__BOT_TOKEN": "xoxb-secret-token",
        "CHAT_BRIDGE_SLACK__APP_TOKEN": "xapp-secret-token",
        "CHAT_BRIDGE_SLACK__HTTP_PORT": "4001",
    }
    settings = load_settings(path, env)
    assert settings.slack.http_port == 4001
    assert settings.slack.bot_token is not None
    assert settings.slack.bot_token.get_secret_value() == "xoxb-secret-token"
    text = "\n".join(summary(settings))
    assert "xoxb-secret-token" not in text and "slack: mode socket" in text


def test_openai_api_key_is_accepted_but_weaker_than_the_bridge_variable() -> None:
    settings = load_settings(None, {"OPENAI_API_KEY": "sk-from-openai-var"})
    assert settings.llm.api_key is not None
    assert settings.llm.api_key.get_secret_value() == "sk-from-openai-var"
    env = {"OPENAI_API_KEY": "sk-a", "CHAT_BRIDGE_LLM__API_KEY": "sk-b"}
    key = load_settings(None, env).llm.api_key
    assert key is not None and key.get_secret_value() == "sk-b"


def test_wrong_type_and_unknown_keys_name_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[slack]\nhttp_port = "abc"\ncolour = 1\n[telegram]\nx = 1\n')
    found = problems(path)
    assert any(p.startswith("slack.http_port: Input should be a valid integer") for p in found)
    assert any(p.startswith("slack.colour: Extra inputs are not permitted") for p in found)
    assert any(p.startswith("telegram: Extra inputs are not permitted") for p in found)


def test_unknown_environment_keys_are_errors() -> None:
    found = problems(None, {"CHAT_BRIDGE_SLACK__BOT_TOKNE": "x", "CHAT_BRIDGE_NOPE": "1"})
    assert "env CHAT_BRIDGE_SLACK__BOT_TOKNE: unknown key slack.bot_tokne" in found
    assert "env CHAT_BRIDGE_NOPE: unknown section 'nope'" in found


def test_enabled_platform_without_its_secrets(tmp_path: Path) -> None:
    path = write(tmp_path, "[slack]\nenabled = true\nmode = 'http'\n[discord]\nenabled = true\n")
    found = problems(path)
    assert "slack.bot_token: required when slack.enabled is true" in found
    assert 'slack.signing_secret: required when slack.mode is "http"' in found
    assert "discord.token: required when discord.enabled is true" in found
    assert any(p.startswith("llm.api_key: required") for p in found)


def test_toml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    found = problems(write(tmp_path, "[slack\nenabled = true\n"))
    assert len(found) == 1 and "config.toml" in found[0]
    assert problems(tmp_path / "absent.toml") == [
        f"--config: no such file: {tmp_path / 'absent.toml'}"
    ]


def test_the_ops_endpoint_is_off_by_default_and_configured_like_any_section(
    tmp_path: Path,
) -> None:
    assert load_settings(None, {}).ops.enabled is False
    path = write(tmp_path, "[ops]\nenabled = true\nport = 9200\n")
    settings = load_settings(path, {"CHAT_BRIDGE_OPS__HOST": "0.0.0.0"})
    assert (settings.ops.host, settings.ops.port) == ("0.0.0.0", 9200)
    assert "ops: /metrics and /healthz at http://0.0.0.0:9200" in summary(settings)
    found = problems(write(tmp_path, "[ops]\nport = 70000\n"))
    assert any(p.startswith("ops.port: Input should be less than or equal to 65535") for p in found)
