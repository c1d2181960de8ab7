"""docs/configuration.md stays true to the configuration: every key has a row in its section's
table, with the model's default and whether it reloads live, and every TOML block and example
value in it loads."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from bridge.config import Settings, load_settings
from bridge.reload import LIVE, live_keys

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "configuration.md"
# The doc's setups take their secrets from the environment, as the bridge does.
SECRETS = {
    "CHAT_BRIDGE_LLM__API_KEY": "sk-test",
    "CHAT_BRIDGE_SLACK__BOT_TOKEN": "xoxb-test",
    "CHAT_BRIDGE_SLACK__APP_TOKEN": "xapp-test",
    "CHAT_BRIDGE_SLACK__SIGNING_SECRET": "test-signing-secret",
    "CHAT_BRIDGE_DISCORD__TOKEN": "test-discord-token",
}
HEADING = re.compile(r"^#{2,4} `\[{1,2}(\w+)\]{1,2}`\s*$")
COLUMNS = ("Key", "Type", "Default", "Example", "Reload", "Meaning")


def section_model(name: str) -> type[BaseModel]:
    annotation = Settings.model_fields[name].annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    (item,) = get_args(annotation)  # [[overrides]]: list[OverrideSettings]
    assert isinstance(item, type) and issubclass(item, BaseModel)
    model: type[BaseModel] = item
    return model


SECTIONS = list(Settings.model_fields)


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def reference_tables() -> dict[str, list[dict[str, str]]]:
    """Per section heading (`### [name]` in backticks), the rows of its table by column name."""
    tables: dict[str, list[dict[str, str]]] = {}
    current: str | None = None
    header: list[str] | None = None
    for line in DOC.read_text().splitlines():
        if line.startswith("#"):
            match = HEADING.match(line)
            current = match.group(1) if match else None
            header = None
            if current is not None:
                assert current not in tables, f"two reference headings for [{current}]"
                tables[current] = []
            continue
        if current is None or not line.startswith("|"):
            continue
        row = cells(line)
        if header is None:
            header = row
            assert tuple(header) == COLUMNS, f"[{current}]: columns {header}"
        elif not set("".join(row)) <= set("-: "):
            assert len(row) == len(header), f"[{current}]: {line}"
            tables[current].append(dict(zip(header, row, strict=True)))
    return tables


TABLES = reference_tables()


def rows_by_key(section: str) -> dict[str, dict[str, str]]:
    assert section in TABLES, f"docs/configuration.md has no reference table for [{section}]"
    rows = {}
    for row in TABLES[section]:
        key = row["Key"].strip("`")
        assert key not in rows, f"{section}.{key}: two rows"
        rows[key] = row
    return rows


def documented(value: Any) -> str:
    """A default as the Default column shows it: a TOML literal in backticks, or "unset"."""
    if value is None:
        return "unset"

    def literal(item: Any) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, str):
            return json.dumps(item, ensure_ascii=False)
        if isinstance(item, list):
            return "[" + ", ".join(literal(element) for element in item) + "]"
        return repr(item)

    return f"`{literal(value)}`"


def load_toml(tmp_path: Path, text: str, environ: dict[str, str] = SECRETS) -> Settings:
    tomllib.loads(text)  # a syntax error names the block, not only the file
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_settings(path, environ)


@pytest.mark.parametrize("section", SECTIONS)
def test_every_key_of_every_section_has_a_row(section: str) -> None:
    documented_keys = set(rows_by_key(section))
    keys = set(section_model(section).model_fields)
    assert not keys - documented_keys, f"[{section}] keys without a row in docs/configuration.md"
    assert not documented_keys - keys, f"[{section}] rows for keys that do not exist"


def test_there_is_no_table_for_an_unknown_section() -> None:
    assert set(TABLES) <= set(SECTIONS)


@pytest.mark.parametrize("section", SECTIONS)
def test_reload_column_agrees_with_reload_live(section: str) -> None:
    live = LIVE.get(section, frozenset())
    for key, row in rows_by_key(section).items():
        expected = "live" if live is None or key in live else "restart"
        assert row["Reload"] == expected, f"{section}.{key}"


def test_hot_reload_section_names_every_live_key() -> None:
    text = DOC.read_text()
    start = text.index("\n## Hot reload")
    prose = text[start : text.index("\n## ", start + 1)]
    for key in live_keys():
        section, _, name = key.partition(".")
        if name in ("", "*"):
            assert f"`[{section}]`" in prose or f"`[[{section}]]`" in prose, key
        else:
            assert f"`{key}`" in prose, key


@pytest.mark.parametrize("section", SECTIONS)
def test_default_column_is_the_models_default(section: str) -> None:
    fields = section_model(section).model_fields
    for key, row in rows_by_key(section).items():
        field = fields[key]
        default = field.get_default(call_default_factory=True)
        assert row["Default"] == documented(default), f"{section}.{key}"


@pytest.mark.parametrize("section", SECTIONS)
def test_every_example_value_is_valid(section: str, tmp_path: Path) -> None:
    for key, row in rows_by_key(section).items():
        example = row["Example"]
        assert example.startswith("`") and example.endswith("`"), f"{section}.{key}: {example}"
        value = example[1:-1]
        if section == "overrides":
            scope = "" if key in ("workspace", "channel", "thread") else 'channel = "C0123ABCD"\n'
            text = f"[[overrides]]\n{scope}{key} = {value}\n"
        else:
            text = f"[{section}]\n{key} = {value}\n"
        if section == "cluster":  # several instances need PostgreSQL (not reached: only loaded)
            text += '[storage]\nurl = "postgresql+asyncpg://bridge@db.internal/bridge"\n'
        # The environment would win over the file: leave out the key's own variable.
        own = f"CHAT_BRIDGE_{section}__{key}".upper()
        settings = load_toml(tmp_path, text, {k: v for k, v in SECRETS.items() if k != own})
        loaded = getattr(settings, section)
        if section == "overrides":
            loaded = loaded[0]
        expected = tomllib.loads(f"v = {value}")["v"]
        actual = getattr(loaded, key)
        actual = actual.get_secret_value() if hasattr(actual, "get_secret_value") else actual
        if isinstance(actual, list) and actual and isinstance(actual[0], BaseModel):
            actual = [item.model_dump(exclude_defaults=True) for item in actual]  # [[mcp.servers]]
        assert actual == expected, f"{section}.{key}"


def toml_blocks() -> list[str]:
    return re.findall(r"^```toml\n(.*?)^```", DOC.read_text(), flags=re.MULTILINE | re.DOTALL)


def test_the_three_setups_are_there() -> None:
    text = DOC.read_text()
    for title in ("team Slack workspace", "public Discord community", "private bot"):
        assert re.search(rf"^### \d\. .*{title}", text, flags=re.MULTILINE | re.IGNORECASE), title
    assert len(toml_blocks()) >= 3


@pytest.mark.parametrize("index", range(len(toml_blocks())))
def test_every_toml_block_is_a_valid_configuration(index: int, tmp_path: Path) -> None:
    load_toml(tmp_path, toml_blocks()[index])
