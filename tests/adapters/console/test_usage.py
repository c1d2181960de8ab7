"""The usage page as an admin reads it: the numbers per day, channel and user in tables and in
the charts' data, who is near or over a quota today, the CSV export (and what a spreadsheet
would run in it), and nothing of the config's secrets anywhere."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date
from html.parser import HTMLParser

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from adapters.console import ConsoleServer
from adapters.console.usage import UsageSection
from bridge.console_settings import ConsoleSettings
from bridge.policy.settings import LimitSettings
from bridge.ports import ReplyOutcome
from bridge.redaction import Redactor
from storage import SqlChatStore
from tests.adapters.console.conftest import PASSWORD_HASH, Clock, Console
from tests.storage.conversations_seed import Seeded

D1, D2, D3 = date(2027, 3, 1), date(2027, 3, 2), date(2027, 3, 3)
SECRET = "xoxb-9999-usage-secret-token"
# A channel and a user whose names quote a secret (whatever put it there, it is never shown).
LEAKY_CHANNEL = f"C-{SECRET}"
LEAKY_USER = f"U-{SECRET}"
RANGE = "since=2027-03-01&until=2027-03-03"


class Tables(HTMLParser):
    """The text of every cell of each table with an id, row by row (header rows left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = dict(attrs).get("id")
            if self._table:
                self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            if self._row and self._row[0] not in ("Day", "Platform"):  # not the header
                self.tables[self._table].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables(html: str) -> dict[str, list[list[str]]]:
    parser = Tables()
    parser.feed(html)
    return parser.tables


def chart_data(html: str) -> dict[str, object]:
    match = re.search(r'<script type="application/json" id="usage-data">(.*?)</script>', html, re.S)
    assert match is not None, html
    data = json.loads(match.group(1))
    assert isinstance(data, dict)
    return data


@dataclass
class Usage:
    console: Console
    store: SqlChatStore
    limits: list[LimitSettings] = field(default_factory=list)

    async def csv(self, query: str) -> tuple[list[list[str]], dict[str, str]]:
        response = await self.console.client.get(f"/usage.csv?{query}", allow_redirects=False)
        assert response.status == 200, await response.text()
        text = await response.text()
        return list(csv.reader(io.StringIO(text))), dict(response.headers)


async def seed_usage(store: SqlChatStore) -> None:
    # D1 was counted before replies' outcomes were: its 429s are unknown.
    await store.add_usage(D1, "slack", user="U1", channel="C1", tokens=100)
    await store.add_usage(D1, "slack", user="U2", channel="C1", tokens=50)
    await store.add_usage(D1, "discord", user="U9", channel="D1", tokens=200)
    await store.add_usage(
        D2, "slack", user="U1", channel="C1", tokens=300, outcome=ReplyOutcome(rate_limited=2)
    )
    await store.add_usage(
        D2, "slack", user=LEAKY_USER, channel=LEAKY_CHANNEL, tokens=0,
        outcome=ReplyOutcome(failed=True, rate_limited=1),
    )  # fmt: skip
    # Today (D3): U1 is over the user quota (400), U7 near it; C1 near the channel quota.
    await store.add_usage(D3, "slack", user="U1", channel="C1", tokens=450, outcome=ReplyOutcome())
    await store.add_usage(D3, "slack", user="U7", channel="C1", tokens=330, outcome=ReplyOutcome())
    await store.add_usage(
        D3, "discord", user="U8", channel="D1", tokens=100, outcome=ReplyOutcome(failed=True)
    )


@pytest.fixture
async def usage(store: SqlChatStore) -> AsyncIterator[Usage]:
    await seed_usage(store)
    clock = Clock()
    limits = [LimitSettings(user_daily_tokens=400, channel_daily_tokens=1000)]
    redactor = Redactor([SECRET])
    section = UsageSection(
        store, limits=lambda: limits[-1], today=lambda: D3, redact=redactor.redact
    )
    settings = ConsoleSettings(
        enabled=True, password_hash=SecretStr(PASSWORD_HASH), session_hours=12
    )
    server = ConsoleServer(
        settings,
        browser=store,
        redact=redactor.redact,
        sections=[section],
        clock=clock,
        sleep=clock.sleep,
    )
    client = TestClient(TestServer(server.app()))
    await client.start_server()
    try:
        yield Usage(Console(client, clock, Seeded({})), store, limits)
    finally:
        await client.close()


async def test_the_page_shows_each_day_channel_and_user(usage: Usage) -> None:
    await usage.console.login()
    status, html = await usage.console.page(f"/usage?{RANGE}")
    assert status == 200, html
    assert 'href="/usage" aria-current="page">Usage</a>' in html
    found = tables(html)
    assert found["usage-days"] == [
        ["2027-03-03", "slack", "780", "2", "0", "0"],
        ["2027-03-03", "discord", "100", "1", "1", "0"],
        ["2027-03-02", "slack", "300", "2", "1", "3"],
        ["2027-03-01", "slack", "150", "2", "0", "—"],
        ["2027-03-01", "discord", "200", "1", "0", "—"],
        ["Total", "", "1,530", "8", "2", "3"],
    ]
    assert found["usage-channels"] == [
        ["slack", "C1", "1,230", "5", "80.4 %"],
        ["discord", "D1", "300", "2", "19.6 %"],
        ["slack", "C-[redacted]", "0", "1", "0.0 %"],
    ]
    assert found["usage-users"] == [
        ["slack", "U1", "850", "3", "55.6 %"],
        ["slack", "U7", "330", "1", "21.6 %"],
        ["discord", "U9", "200", "1", "13.1 %"],
        ["discord", "U8", "100", "1", "6.5 %"],
        ["slack", "U2", "50", "1", "3.3 %"],
        ["slack", "U-[redacted]", "0", "1", "0.0 %"],
    ]
    assert 'id="total-tokens">1,530<' in html and 'id="total-429s">3<' in html
    # From the first counted day on, 429s are counted; the note says since when.
    assert "counted per reply from 2027-03-02" in html
    # A row links to that channel's conversations of the range.
    assert (
        'href="/conversations?platform=slack&amp;channel=C1&amp;since=2027-03-01&amp;'
        'until=2027-03-03"' in html
    )
    assert f'href="/usage.csv?{RANGE.replace("&", "&amp;")}"' in html

    # One platform: its rows only, and the form keeps the choice.
    status, html = await usage.console.page(f"/usage?{RANGE}&platform=discord")
    assert [row[1] for row in tables(html)["usage-days"][:-1]] == ["discord", "discord"]
    assert '<option value="discord" selected>' in html


async def test_the_charts_data_is_in_the_page_for_the_script(usage: Usage) -> None:
    await usage.console.login()
    _, html = await usage.console.page(f"/usage?{RANGE}")
    data = chart_data(html)
    assert data == {
        "days": ["2027-03-01", "2027-03-02", "2027-03-03"],
        "series": [
            {"platform": "discord", "tokens": [200, 0, 100], "replies": [1, 0, 1],
             "failed": [0, 0, 1], "rate_limited": [None, 0, 0]},
            {"platform": "slack", "tokens": [150, 300, 780], "replies": [2, 2, 2],
             "failed": [0, 1, 0], "rate_limited": [None, 3, 0]},
        ],
    }  # fmt: skip
    # The chart library and the page's own script come from this origin; no inline script.
    assert '<script src="/static/vendor/chart.umd.min.js" defer></script>' in html
    assert '<script src="/static/usage.js" defer></script>' in html
    for tag in re.findall(r"<script[^>]*>", html):
        assert "src=" in tag or 'type="application/json"' in tag, tag
    assert not re.search(r"<[^>]*\son[a-z]+=", html)  # no inline event handler either
    assert not re.search(r"<[^>]*\sstyle=", html)  # nor inline style (style-src 'self')
    for path, kind in (
        ("/static/vendor/chart.umd.min.js", "javascript"),
        ("/static/usage.js", "javascript"),
        ("/static/usage.css", "css"),
    ):
        response = await usage.console.client.get(path)
        assert response.status == 200 and kind in response.headers["Content-Type"], path
        if path.endswith("chart.umd.min.js"):
            assert "Chart.js v4" in await response.text()


async def test_the_data_block_cannot_be_ended_by_a_stored_name(usage: Usage) -> None:
    await usage.store.add_usage(D3, "x</script><b>&", user="U1", channel="C1", tokens=5)
    await usage.console.login()
    _, html = await usage.console.page(f"/usage?{RANGE}")
    assert "</script><b>" not in html
    data = chart_data(html)
    series = data["series"]
    assert isinstance(series, list)
    assert [s["platform"] for s in series] == ["discord", "slack", "x</script><b>&"]


async def test_the_default_range_is_the_last_30_days(usage: Usage) -> None:
    await usage.console.login()
    status, html = await usage.console.page("/usage")
    assert status == 200
    assert 'name="since" type="date" value="2027-02-02"' in html
    assert 'name="until" type="date" value="2027-03-03"' in html
    assert len(chart_data(html)["days"]) == 30  # type: ignore[arg-type]
    for query in ("since=2027-03-04&until=2027-03-01", "since=yesterday",
                  "since=2025-01-01&until=2027-01-01"):  # fmt: skip
        assert (await usage.console.page(f"/usage?{query}"))[0] == 400, query
        assert (await usage.console.page(f"/usage.csv?{query}"))[0] == 400, query


async def test_quota_state_lists_who_is_over_and_who_is_near(usage: Usage) -> None:
    await usage.console.login()
    _, html = await usage.console.page(f"/usage?{RANGE}")
    found = tables(html)
    assert found["quota-users"] == [
        ["slack", "U1", "450", "400", "112 %", "over"],
        ["slack", "U7", "330", "400", "82 %", "near"],
    ]
    # C1's 780 is under 80 % of 1,000: no channel is listed.
    assert "quota-channels" not in found and "No channel is near the quota." in html
    assert "Quota state today (2027-03-03, UTC)" in html

    # The quotas are read live ([limits] reloads): a lower channel quota lists C1 as over.
    usage.limits.append(LimitSettings(user_daily_tokens=0, channel_daily_tokens=700))
    _, html = await usage.console.page(f"/usage?{RANGE}")
    found = tables(html)
    assert found["quota-channels"] == [["slack", "C1", "780", "700", "111 %", "over"]]
    assert "quota-users" not in found and "No user quota (unlimited)." in html
    usage.limits.append(LimitSettings())
    _, html = await usage.console.page(f"/usage?{RANGE}")
    assert "No daily token quota is set" in html


async def test_the_csv_export(usage: Usage) -> None:
    await usage.store.add_usage(D2, "slack", user="=HYPERLINK(1)", channel="+C9", tokens=7)
    await usage.store.add_usage(D2, "slack", user="@SUM(A1)", channel="-2+3", tokens=6)
    await usage.console.login()
    rows, headers = await usage.csv(RANGE)
    assert headers["Content-Type"] == "text/csv; charset=utf-8"
    assert headers["Content-Disposition"] == (
        'attachment; filename="chat-bridge-usage-2027-03-01-to-2027-03-03.csv"'
    )
    assert rows[0] == ["kind", "from", "to", "platform", "key", "tokens", "replies", "failed",
                       "429s"]  # fmt: skip
    span = ["2027-03-01", "2027-03-03"]
    assert rows[1:] == [
        ["day", "2027-03-01", "2027-03-01", "discord", "", "200", "1", "0", ""],
        ["day", "2027-03-01", "2027-03-01", "slack", "", "150", "2", "0", ""],
        ["day", "2027-03-02", "2027-03-02", "slack", "", "313", "4", "1", "3"],
        ["day", "2027-03-03", "2027-03-03", "discord", "", "100", "1", "1", "0"],
        ["day", "2027-03-03", "2027-03-03", "slack", "", "780", "2", "0", "0"],
        ["channel", *span, "slack", "C1", "1230", "5", "", ""],
        ["channel", *span, "discord", "D1", "300", "2", "", ""],
        ["channel", *span, "slack", "'+C9", "7", "1", "", ""],
        ["channel", *span, "slack", "'-2+3", "6", "1", "", ""],
        ["channel", *span, "slack", "C-[redacted]", "0", "1", "", ""],
        ["user", *span, "slack", "U1", "850", "3", "", ""],
        ["user", *span, "slack", "U7", "330", "1", "", ""],
        ["user", *span, "discord", "U9", "200", "1", "", ""],
        ["user", *span, "discord", "U8", "100", "1", "", ""],
        ["user", *span, "slack", "U2", "50", "1", "", ""],
        ["user", *span, "slack", "'=HYPERLINK(1)", "7", "1", "", ""],
        ["user", *span, "slack", "'@SUM(A1)", "6", "1", "", ""],
        ["user", *span, "slack", "U-[redacted]", "0", "1", "", ""],
    ]
    rows, _ = await usage.csv(f"{RANGE}&platform=discord")
    assert {row[3] for row in rows[1:]} == {"discord"}


async def test_no_secret_appears_in_the_page_the_data_or_the_csv(usage: Usage) -> None:
    await usage.console.login()
    _, html = await usage.console.page(f"/usage?{RANGE}")
    response = await usage.console.client.get(f"/usage.csv?{RANGE}")
    exported = await response.text()
    for text in (html, exported):
        assert SECRET not in text and "[redacted]" in text


async def test_without_a_session_the_page_and_the_csv_send_to_login(usage: Usage) -> None:
    for path in ("/usage", f"/usage?{RANGE}", "/usage.csv"):
        response = await usage.console.client.get(path, allow_redirects=False)
        assert response.status == 303 and response.headers["Location"] == "/login", path
