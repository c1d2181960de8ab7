"""The core stays platform-free: nothing in bridge/ but the composition root pulls in an SDK."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

BRIDGE = Path(__file__).resolve().parents[2] / "bridge"
FORBIDDEN = (
    "slack_bolt",
    "slack_sdk",
    "discord",
    "openai",
    "sqlalchemy",
    "aiohttp",
    "storage",
    "adapters",
)
COMPOSITION_ROOT = {"app.py"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_modules_import_no_sdk_statically() -> None:
    offenders = {}
    for path in BRIDGE.rglob("*.py"):
        if path.name in COMPOSITION_ROOT:
            continue
        bad = {m for m in imported_modules(path) if m.split(".")[0] in FORBIDDEN}
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}


def test_importing_the_core_loads_no_sdk() -> None:
    modules = [
        f"bridge.{p.stem}"
        for p in BRIDGE.glob("*.py")
        if p.name not in COMPOSITION_ROOT and p.stem not in {"__main__"}
    ]
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({FORBIDDEN!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
