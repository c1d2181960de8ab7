"""Text that enters the bridge is made storable and sendable: no NUL, no lone surrogate."""

from __future__ import annotations

import json
import random
import sqlite3

import pytest

from bridge.text import clean_text


@pytest.mark.parametrize(
    "text",
    ["", "plain ASCII", "naïve café ☕", "日本語のテキスト", "emoji 😀 and 𝄞", "tab\tnew\nline"],
)
def test_clean_text_comes_back_as_the_same_object(text: str) -> None:
    assert clean_text(text) is text  # the common case copies nothing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a\x00b", "ab"),
        ("\x00\x00", ""),
        ("café\x00", "café"),
        ("x\ud800y", "x\ufffdy"),
        ("\udc00", "\ufffd"),
        ("\ud800\ud800", "\ufffd\ufffd"),
        ("\ude00\ud83d", "\ufffd\ufffd"),  # a low then a high surrogate are not a pair
        ("ok \ud83d\ude00", "ok 😀"),  # a pair in one string is the character it encodes
        ("\x00é\udfff", "é\ufffd"),
    ],
)
def test_nul_is_removed_and_lone_surrogates_become_replacement_characters(
    text: str, expected: str
) -> None:
    assert clean_text(text) == expected


def test_what_json_loads_makes_of_hostile_escapes_is_cleaned() -> None:
    raw = json.loads('"he\\u0000llo \\ud800world \\udfff"')
    assert clean_text(raw) == "hello \ufffdworld \ufffd"


def test_cleaned_text_can_be_stored_by_sqlite3() -> None:
    hostile = "reply\x00 with \ud800 in it"
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (body TEXT)")
    with pytest.raises(UnicodeEncodeError):
        db.execute("INSERT INTO t VALUES (?)", (hostile,))
    db.execute("INSERT INTO t VALUES (?)", (clean_text(hostile),))
    assert db.execute("SELECT body FROM t").fetchone() == ("reply with \ufffd in it",)
    db.close()


def test_any_text_comes_out_encodable_without_nul_and_cleaning_twice_changes_nothing() -> None:
    alphabet = ["a", " ", "é", "☕", "😀", "\x00", "\ud800", "\udbff", "\udc00", "\udfff"]
    rng = random.Random(7)
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
        cleaned = clean_text(text)
        cleaned.encode("utf-8")  # raises if a surrogate is left
        assert "\x00" not in cleaned
        assert clean_text(cleaned) == cleaned
