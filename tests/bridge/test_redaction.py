"""The config's secrets cut out of text: whole, the longest first, and nothing else touched."""

from __future__ import annotations

from bridge.redaction import REDACTED, Redactor


def test_each_secret_is_cut_out_wherever_it_is() -> None:
    redactor = Redactor(["xoxb-123456", "sk-abcdefgh", "short"])
    text = "token xoxb-123456 and sk-abcdefghsk-abcdefgh at the end: xoxb-123456"
    assert redactor.redact(text) == (
        f"token {REDACTED} and {REDACTED}{REDACTED} at the end: {REDACTED}"
    )
    assert redactor.redact("a short word") == "a short word"  # under six characters: a setting


def test_a_secret_that_holds_another_is_cut_whole() -> None:
    redactor = Redactor(["abcdef", "abcdef-ghijkl"])
    assert redactor.redact("x abcdef-ghijkl y abcdef") == f"x {REDACTED} y {REDACTED}"


def test_text_without_a_secret_comes_back_as_it_is() -> None:
    redactor = Redactor(["xoxb-123456"])
    text = "a long reply " * 200 + "xoxb-12345"  # a secret's prefix is not the secret
    assert redactor.redact(text) is text
    assert Redactor([]).redact(text) is text


def test_json_values_and_keys_are_redacted() -> None:
    redactor = Redactor(["secret-value"])
    value = {"secret-value": ["x secret-value", 3, {"k": "secret-value"}]}
    assert redactor.redact_json(value) == {REDACTED: [f"x {REDACTED}", 3, {"k": REDACTED}]}
