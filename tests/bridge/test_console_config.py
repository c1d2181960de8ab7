"""`[console]` in the config: what `check` refuses, what it warns about, and its summary line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import ConfigError, load_settings, summary, warnings

# An argon2id hash in the form `chat-bridge console-password` prints (of no password in use).
HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0c2FsdA$"
    "l1ZpUu3bD2ShIHiQxV6T1b6kSe4rQ7GJv5n9Ryb0Ruw"
)


def load(text: str, tmp_path: Path) -> list[str] | tuple[list[str], list[str]]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    try:
        settings = load_settings(path, {})
    except ConfigError as exc:
        return exc.problems
    return summary(settings), warnings(settings)


def test_the_console_is_off_and_local_by_default() -> None:
    console = load_settings(None, {}).console
    assert (console.enabled, console.host, console.port) == (False, "127.0.0.1", 9103)
    assert console.password_hash is None and console.session_hours == 12


def test_enabled_without_a_hash_is_refused_with_the_fix(tmp_path: Path) -> None:
    assert load("[console]\nenabled = true\n", tmp_path) == [
        "console.password_hash: required when console.enabled is true; make one with "
        "`chat-bridge console-password`"
    ]


@pytest.mark.parametrize(
    "value",
    ["hunter2hunter2", "$2b$12$abcdefghijklmnopqrstuvABCDEFGHIJKLMNOPQRSTUVWXYZ01234",
     "$argon2id$v=19$m=65536$c2FsdA$aGFzaA"],
)  # fmt: skip
def test_a_hash_that_is_not_argon2_is_refused(value: str, tmp_path: Path) -> None:
    problems = load(f"[console]\npassword_hash = '{value}'\n", tmp_path)
    assert isinstance(problems, list)
    assert problems == [
        "console.password_hash: not an argon2 hash (it starts with $argon2id$); make one with "
        "`chat-bridge console-password`"
    ]
    assert value not in "\n".join(problems)  # a password pasted by mistake is not echoed


def test_session_hours_must_be_positive(tmp_path: Path) -> None:
    problems = load("[console]\nsession_hours = 0\n", tmp_path)
    assert isinstance(problems, list)
    assert problems[0].startswith("console.session_hours: Input should be greater than 0")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_a_local_console_is_summarised_without_the_hash_and_not_warned_about(
    host: str, tmp_path: Path
) -> None:
    found = load(
        f"[console]\nenabled = true\nhost = '{host}'\npassword_hash = '{HASH}'\n", tmp_path
    )
    assert isinstance(found, tuple)
    lines, warned = found
    (line,) = [line for line in lines if line.startswith("console:")]
    shown = f"[{host}]" if ":" in host else host
    assert line == f"console: http://{shown}:9103/ (password_hash set, sessions last 12h)"
    assert "argon2" not in "\n".join(lines)
    assert warned == []


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "console.example.com", "::"])
def test_a_console_reachable_from_other_machines_is_warned_about(host: str, tmp_path: Path) -> None:
    found = load(
        f"[console]\nenabled = true\nhost = '{host}'\npassword_hash = '{HASH}'\n", tmp_path
    )
    assert isinstance(found, tuple)
    (warning,) = found[1]
    assert warning.startswith(f"console.host: {host!r} is reachable from other machines")
    assert "reverse proxy with TLS" in warning and "docs/console.md" in warning
    # Not enabled: nothing is served, nothing to warn about.
    quiet = load(f"[console]\nhost = '{host}'\n", tmp_path)
    assert isinstance(quiet, tuple) and quiet[1] == []
