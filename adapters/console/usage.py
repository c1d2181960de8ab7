"""The console's usage page (`/usage`) and its CSV export (`/usage.csv`): tokens, replies, failed
replies and 429s per day and platform, the biggest channels and users of a range of days, and
who is near or over a daily token quota today. They translate between HTTP and the
`UsageBrowser` port; the template lays the numbers out and `static/usage.js` draws the charts
from the JSON block the page carries (no inline script: the console's CSP allows none).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from adapters.console.section import Render
from bridge.policy.settings import LimitSettings
from bridge.ports import UsageBrowser, UsageDay, UsageRange, UsageSummary, UsageTotal

DEFAULT_DAYS = 30
MAX_DAYS = 366
TOP = 20
CSV_TOP = 10_000  # channels and users in the export, the biggest first
NEAR = 0.8  # a quota's share from which a user or channel is listed as near it
QUOTA_LINES = 100
CSV_HEADER = ("kind", "from", "to", "platform", "key", "tokens", "replies", "failed", "429s")
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True, slots=True)
class JsonBlock:
    """Data for a page's script, as the text of a `<script type="application/json">`: never
    HTML-escaped (a script's text is not entity-decoded), so `<`, `>` and `&` are JSON escapes,
    and no `</script>` can end it early. Not a string: the templates' redaction passes it by."""

    text: str

    @classmethod
    def of(cls, value: Any) -> JsonBlock:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        return cls(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))

    def __html__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class TotalView:
    """A channel or user row of the tables: its share of the range's tokens, and a link to its
    conversations."""

    platform: str
    key: str
    tokens: int
    replies: int
    share: float
    link: str


class UsageSection:
    """The Usage part of the console. `limits`: the live `[limits]` (the daily token quotas);
    `today`: the quotas' UTC day (the policy's); `redact`: the config's secrets out of every
    value, the CSV's too."""

    nav = ("/usage", "Usage")

    def __init__(
        self,
        browser: UsageBrowser,
        *,
        limits: Callable[[], LimitSettings],
        today: Callable[[], date],
        redact: Callable[[str], str] = lambda text: text,
        top: int = TOP,
    ) -> None:
        self._browser = browser
        self._limits = limits
        self._today = today
        self._redact = redact
        self._top = top
        self._render: Render | None = None

    def add_routes(self, router: web.UrlDispatcher, render: Render) -> None:
        self._render = render
        router.add_get("/usage", self.page)
        router.add_get("/usage.csv", self.csv)

    async def close(self) -> None:
        return None  # nothing held open: every request is answered at once

    async def page(self, request: web.Request) -> web.StreamResponse:
        assert self._render is not None, "add_routes first"
        today = self._today()
        where = parse_range(request.query, today)
        summary = await self._browser.usage(where, top=self._top)
        limits = self._limits()
        quotas = await self._browser.quota_state(
            today,
            user_quota=limits.user_daily_tokens,
            channel_quota=limits.channel_daily_tokens,
            platform=where.platform,
            near=NEAR,
            limit=QUOTA_LINES,
        )
        kept = _kept(where)
        tokens = sum(day.tokens for day in summary.days)
        return self._render(
            "usage.html",
            request,
            {
                "where": where,
                "platforms": sorted({"slack", "discord", *(d.platform for d in summary.days)}),
                "summary": summary,
                "days": sorted(summary.days, key=lambda d: (d.day, d.platform), reverse=True),
                "totals": _totals(summary.days),
                "channels": self._views(summary.channels, tokens, where, "channel"),
                "users": self._views(summary.users, tokens, where, "user"),
                "quotas": quotas,
                "user_quota": limits.user_daily_tokens,
                "channel_quota": limits.channel_daily_tokens,
                "near_percent": round(NEAR * 100),
                "chart": JsonBlock.of(self._chart(summary, where)),
                "csv_link": "/usage.csv?" + urlencode(kept),
            },
        )

    async def csv(self, request: web.Request) -> web.StreamResponse:
        where = parse_range(request.query, self._today())
        summary = await self._browser.usage(where, top=CSV_TOP)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(CSV_HEADER)
        writer.writerows(self._cells(csv_rows(summary, where)))
        name = f"chat-bridge-usage-{where.since}-to-{where.until}.csv"
        return web.Response(
            body=out.getvalue().encode(),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    def _cells(self, rows: Iterable[Sequence[object]]) -> Iterator[list[str]]:
        """Each row's cells redacted and defused: once per distinct text, since most repeat
        (kinds, days, platforms, small counts) over thousands of rows."""
        done: dict[str, str] = {}
        for row in rows:
            cells = []
            for value in row:
                text = str(value)
                cell = done.get(text)
                if cell is None:
                    cell = done[text] = _defused(self._redact(text))
                cells.append(cell)
            yield cells

    def _views(
        self, totals: Iterable[UsageTotal], tokens: int, where: UsageRange, column: str
    ) -> list[TotalView]:
        views = []
        for total in totals:
            query = {"platform": total.platform, column: total.key, "since": where.since,
                     "until": where.until}  # fmt: skip
            views.append(
                TotalView(
                    platform=total.platform,
                    key=total.key,
                    tokens=total.tokens,
                    replies=total.replies,
                    share=total.tokens / tokens if tokens else 0.0,
                    link="/conversations?" + urlencode(query),
                )
            )
        return views

    def _chart(self, summary: UsageSummary, where: UsageRange) -> dict[str, Any]:
        """Every day of the range (days with nothing counted as 0), one series per platform;
        a day whose 429s are unknown is null (a gap in the chart)."""
        days = [
            where.since + timedelta(days=n) for n in range((where.until - where.since).days + 1)
        ]
        position = {day: index for index, day in enumerate(days)}
        series: dict[str, dict[str, list[int | None]]] = {}
        for found in summary.days:
            lines = series.setdefault(found.platform, _empty_series(days, summary.counted_since))
            at = position[found.day]
            lines["tokens"][at] = found.tokens
            lines["replies"][at] = found.replies
            lines["failed"][at] = found.failed
            lines["rate_limited"][at] = found.rate_limited
        return {
            "days": [day.isoformat() for day in days],
            "series": [
                {"platform": self._redact(platform), **lines}
                for platform, lines in sorted(series.items())
            ],
        }


def parse_range(query: Mapping[str, str], today: date) -> UsageRange:
    """`since` and `until` (UTC days, both shown) and `platform`; the default is the last 30
    days up to today."""
    until = _day(query.get("until", "").strip(), "until") or today
    since = _day(query.get("since", "").strip(), "since") or until - timedelta(DEFAULT_DAYS - 1)
    if since > until:
        raise web.HTTPBadRequest(text="since: a day before until")
    if (until - since).days >= MAX_DAYS:
        raise web.HTTPBadRequest(text=f"since, until: at most {MAX_DAYS} days")
    platform = query.get("platform", "").strip()[:32] or None
    return UsageRange(since, until, platform)


def csv_rows(summary: UsageSummary, where: UsageRange) -> list[tuple[object, ...]]:
    """The export: a row per day and platform, then per channel and per user over the range.
    A day whose 429s are unknown has an empty cell."""
    rows: list[tuple[object, ...]] = []
    for day in summary.days:
        rate_limited = "" if day.rate_limited is None else day.rate_limited
        rows.append(("day", day.day, day.day, day.platform, "", day.tokens, day.replies,
                     day.failed, rate_limited))  # fmt: skip
    for kind, totals in (("channel", summary.channels), ("user", summary.users)):
        for total in totals:
            rows.append((kind, where.since, where.until, total.platform, total.key, total.tokens,
                         total.replies, "", ""))  # fmt: skip
    return rows


def _defused(cell: str) -> str:
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def _totals(days: Sequence[UsageDay]) -> dict[str, int | None]:
    known = [day.rate_limited for day in days if day.rate_limited is not None]
    return {
        "tokens": sum(day.tokens for day in days),
        "replies": sum(day.replies for day in days),
        "failed": sum(day.failed for day in days),
        "rate_limited": sum(known) if known else None,
    }


def _empty_series(days: Sequence[date], counted: date | None) -> dict[str, list[int | None]]:
    # Before the first counted day the 429s are unknown: null (a gap), not 0.
    return {
        "tokens": [0] * len(days),
        "replies": [0] * len(days),
        "failed": [0] * len(days),
        "rate_limited": [None if counted is None or day < counted else 0 for day in days],
    }


def _kept(where: UsageRange) -> dict[str, str]:
    kept = {"since": where.since.isoformat(), "until": where.until.isoformat()}
    if where.platform:
        kept["platform"] = where.platform
    return kept


def _day(value: str, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}: a date as YYYY-MM-DD") from None
