"""`chat-bridge console-password` as an admin or a script runs it, then `check` with its hash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from argon2 import PasswordHasher

from tests.test_cli import ROOT, chat_bridge

PASSWORD = "correct horse battery staple"


def console_password(stdin: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_BRIDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "bridge", "console-password"],
        cwd=ROOT,
        env=clean,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_script_gets_the_argon2id_hash_of_one_line_of_stdin(tmp_path: Path) -> None:
    result = console_password(PASSWORD + "\n")
    assert result.returncode == 0, result.stderr
    password_hash = result.stdout.strip()
    assert password_hash.startswith("$argon2id$")
    assert PasswordHasher().verify(password_hash, PASSWORD)
    assert PASSWORD not in result.stdout + result.stderr
    # Two runs, two salts.
    assert console_password(PASSWORD + "\n").stdout.strip() != password_hash

    config = tmp_path / "config.toml"
    config.write_text(f"[console]\nenabled = true\npassword_hash = '{password_hash}'\n")
    checked = chat_bridge("check", "--config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert "  console: http://127.0.0.1:9103/ (password_hash set, sessions last 12h)" in (
        checked.stdout.splitlines()
    )
    assert password_hash not in checked.stdout and "$argon2" not in checked.stdout
    assert checked.stderr == ""


def test_a_short_password_is_refused() -> None:
    result = console_password("eleven char\n")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == "error: the password must have at least 12 characters\n"
    assert console_password("").returncode == 2


def test_check_refuses_a_console_without_a_hash_and_warns_of_a_public_one(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[console]\nenabled = true\n")
    result = chat_bridge("check", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        "error: console.password_hash: required when console.enabled is true; make one with "
        "`chat-bridge console-password`"
    )
    password_hash = console_password(PASSWORD + "\n").stdout.strip()
    config.write_text(
        f"[console]\nenabled = true\nhost = '0.0.0.0'\npassword_hash = '{password_hash}'\n"
    )
    result = chat_bridge("check", "--config", str(config))
    assert result.returncode == 0  # a warning, not an error
    assert result.stderr.startswith("warning: console.host: '0.0.0.0' is reachable from other")
    assert "reverse proxy with TLS" in result.stderr
