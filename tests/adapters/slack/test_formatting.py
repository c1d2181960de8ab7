"""Mention defusing, the streaming-safe prefix, and the content sent with each message."""

from __future__ import annotations

import re

import pytest

from adapters.slack.formatting import (
    FALLBACK_CHARS,
    ZERO_WIDTH_SPACE,
    message_content,
    neutralise_mentions,
    plain_fallback,
    prompt_title,
    settled_length,
)

PINGS = re.compile(r"<@|<!(?:here|channel|everyone|subteam)|@(?:here|channel|everyone)", re.I)


@pytest.mark.parametrize(
    "text",
    ["<!here>", "<!channel>", "<!everyone>", "<!here|here>", "<!subteam^S0DEVS|devs>",
     "<!subteam^S0TEAM|@devs>", "@here", "@channel", "@everyone", "@HERE", "hi @Channel!",
     "<!Everyone>", "<@U0ALICE> thanks", "<@W0BOB|bob>", "ask <@U0ALICE|alice>, <@W0BOB>", "<@u1>",
     "<@here>"],
)  # fmt: skip
def test_every_mention_is_broken_but_reads_the_same(text: str) -> None:
    defused = neutralise_mentions(text)
    assert not PINGS.search(defused)
    assert defused.replace(ZERO_WIDTH_SPACE, "") == text


@pytest.mark.parametrize(
    "text",
    ["mail me@example.com", "<me@example.com>", "<!DOCTYPE html>", "<!-- a comment -->",
     "@heroku deploy", "<https://example.com|a link>", "x <! y", "a < @b", "<#C0GENERAL>",
     "if a<b and c@d"],
)  # fmt: skip
def test_everything_else_is_left_alone(text: str) -> None:
    assert neutralise_mentions(text) == text


@pytest.mark.parametrize(
    ("text", "settled"),
    [
        ("Hello @", 6),
        ("Hello @he", 6),
        ("Hello @here", 11),
        ("Hello @hex", 10),
        ("See <", 4),
        ("See <@", 5),  # `<@` is decided, but `@` may still become `@here`
        ("See <@U0AL", 10),
        ("See <h", 6),
        ("See <!sub", 4),
        ("See <!subteam^", 14),
        ("See <!DOCTY", 11),
        ("mail me@exam", 12),
        ("", 0),
    ],
)
def test_a_possible_mention_at_the_end_is_held_back(text: str, settled: int) -> None:
    assert settled_length(text) == settled


def test_what_a_stream_has_shown_never_has_to_change() -> None:
    text = (
        "Ping @here, <!channel> and <!subteam^S1|@devs>; mail a@everyone.io or @Everyone now;"
        " ask <@U0ALICE> or <@W0BOB|bob> <@here>, not a<b."
    )
    shown = ""
    for end in range(len(text) + 1):
        prefix = text[:end]
        settled = neutralise_mentions(prefix[: settled_length(prefix)])
        assert settled.startswith(shown), (prefix, shown, settled)
        assert not PINGS.search(settled)
        shown = settled
    assert neutralise_mentions(text).startswith(shown)


def test_the_fallback_is_plain_escaped_and_short() -> None:
    markdown = "## Title\n**Bold** and __this__, a [link](https://x.io) <@U0BOB> & @here"
    assert plain_fallback(markdown) == (
        f"Title\nBold and this, a link (https://x.io) &lt;@U0BOB&gt; &amp; @{ZERO_WIDTH_SPACE}here"
    )
    long = plain_fallback("a&b " * 2_000)
    assert len(long) <= FALLBACK_CHARS and long.endswith("…")
    assert re.search(r"&[a-z]*…$", long) is None  # no half escape before the ellipsis


def test_message_content_is_a_markdown_block_with_a_fallback() -> None:
    content = message_content("**Hi** <!here>")
    assert content["blocks"] == [{"type": "markdown", "text": f"**Hi** <{ZERO_WIDTH_SPACE}!here>"}]
    assert content["text"] == "Hi &lt;!here&gt;"


def test_people_and_user_groups_are_defused_in_the_block_and_escaped_in_the_fallback() -> None:
    content = message_content("**Ask** <@U0ALICE>, <@W0BOB|bob> or <!subteam^S0TEAM|@devs>")
    z = ZERO_WIDTH_SPACE
    assert content["blocks"] == [
        {
            "type": "markdown",
            "text": f"**Ask** <{z}@U0ALICE>, <{z}@W0BOB|bob> or <{z}!subteam^S0TEAM|@devs>",
        }
    ]
    # Slack reads `&lt;` as a literal `<` in `text`: no mention left to defuse there.
    assert content["text"] == (
        "Ask &lt;@U0ALICE&gt;, &lt;@W0BOB|bob&gt; or &lt;!subteam^S0TEAM|@devs&gt;"
    )


def test_prompt_titles_are_short_first_lines() -> None:
    assert prompt_title("Summarise\nthe channel") == "Summarise"
    title = prompt_title("x" * 100)
    assert len(title) == 40 and title.endswith("…")
