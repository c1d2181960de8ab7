"""The sandbox's MCP server (`sandbox/mcp_server`): its tools through the SDK's client, in
process, and the calculator's and the search's edges directly."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from mcp import Client

from sandbox.mcp_server import build_server
from sandbox.mcp_server.calculator import CalculationError, calculate, format_number
from sandbox.mcp_server.documents import DOCUMENTS, search

NOON = datetime(2026, 7, 14, 12, 0, 5, tzinfo=UTC)


def _client() -> Client:
    """The server in process, its clock stopped at NOON (a fixture cannot hold it: the SDK's
    task groups must be left by the task that entered them)."""
    return Client(build_server(clock=lambda: NOON))


async def _call(client: Client, tool: str, **arguments: object) -> tuple[bool, str]:
    result = await client.call_tool(tool, arguments)
    text = "\n".join(part.text for part in result.content if part.type == "text")
    return result.is_error, text


async def test_it_offers_three_tools() -> None:
    async with _client() as client:
        tools = (await client.list_tools()).tools

    assert [tool.name for tool in tools] == ["now", "calculate", "search_docs"]
    assert all(tool.description for tool in tools)


async def test_now_in_utc_and_in_a_time_zone() -> None:
    async with _client() as client:
        utc = await _call(client, "now")
        paris = await _call(client, "now", timezone="Europe/Paris")
        mars = await _call(client, "now", timezone="Mars/Olympus_Mons")

    assert utc == (
        False,
        "Tuesday 14 July 2026, 12:00:05 UTC (UTC+00:00, UTC); ISO 8601: 2026-07-14T12:00:05+00:00",
    )
    assert not paris[0]
    assert paris[1].startswith("Tuesday 14 July 2026, 14:00:05 CEST (UTC+02:00, Europe/Paris)")
    assert mars[0] and "unknown time zone 'Mars/Olympus_Mons'" in mars[1]


async def test_calculate_answers_or_explains() -> None:
    async with _client() as client:
        answer = await _call(client, "calculate", expression="(17 + 4) * 3 / 2")
        refusal = await _call(client, "calculate", expression="__import__('os').getcwd()")

    assert answer == (False, "(17 + 4) * 3 / 2 = 31.5")
    assert refusal[0] and "not allowed" in refusal[1]


async def test_search_docs_returns_titled_matches() -> None:
    async with _client() as client:
        found = await _call(client, "search_docs", query="admin commands to set the model")
        missed = await _call(client, "search_docs", query="zebra")

    assert not found[0] and found[1].startswith("## Admin commands\n")
    assert not missed[0] and missed[1].startswith("No document matches 'zebra'")


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1 + 2 * 3", "7"),
        ("(1 + 2) * 3", "9"),
        ("-2 ** 2", "-4"),
        ("7 / 2", "3.5"),
        ("6 / 3", "2"),
        ("2 ** 10 % 7", "2"),
        ("-7 % 3", "2"),
        ("2 ** -1", "0.5"),
        ("1.5e3 + .5", "1500.5"),
        ("2 ** 100", str(2**100)),
    ],
)
def test_calculator_values(expression: str, value: str) -> None:
    assert format_number(calculate(expression)) == value


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("", "empty"),
        ("1 +", "not an arithmetic expression"),
        ("x + 1", "not allowed"),
        ("abs(-1)", "not allowed"),
        ("'a' * 3", "only numbers"),
        ("True + 1", "only numbers"),
        ("1 // 2", "not allowed"),
        ("[1, 2]", "not allowed"),
        ("1 / 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("9 ** 9 ** 9", "exponents are limited"),
        ("10 ** 2000", "more than 1000 digits"),
        ("(10 ** 600) * (10 ** 600)", "more than 1000 digits"),
        ("10.0 ** 400", "too large"),
        ("1e308 * 10", "not a finite number"),
        ("(-8) ** 0.5", "not a real number"),
        ("1" + " + 1" * 200, "longer than 500 characters"),
        ("(" * 220 + "1" + ")" * 220, "not an arithmetic expression"),
    ],
)
def test_calculator_refusals(expression: str, reason: str) -> None:
    with pytest.raises(CalculationError, match=reason):
        calculate(expression)


def test_search_ranks_titles_first_and_limits() -> None:
    assert [d.title for d, _ in search("sandbox", limit=1)] == ["The offline sandbox"]
    assert len(search("the bridge slack discord", limit=2)) == 2
    assert search("the of and") == []
    assert 5 <= len(DOCUMENTS) <= 8
