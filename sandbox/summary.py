"""The sandbox's closing report: per platform what the bot asked of it and how fast replies showed.

Times are measured from the emulators' side (a person's post to what the platform shows);
tokens come from the usage the bridge stored with each reply.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from sandbox.exchange import Exchange, PlatformCounts


@dataclass(frozen=True, slots=True)
class PlatformReport:
    name: str
    exchanges: tuple[Exchange, ...]
    counts: PlatformCounts
    labels: dict[Exchange, str]

    @property
    def conversations(self) -> int:
        return len({exchange.key for exchange in self.exchanges})

    @property
    def complete(self) -> int:
        return sum(1 for exchange in self.exchanges if exchange.status == "complete")

    @property
    def stopped(self) -> int:
        """Replies a user stopped with the Stop button or 🛑 (the script stops one)."""
        return sum(1 for exchange in self.exchanges if exchange.status == "stopped")


@dataclass(frozen=True, slots=True)
class Totals:
    wall_time: float
    startup: float
    db_rows_written: int
    storage: str


def render(platforms: Sequence[PlatformReport], totals: Totals) -> list[str]:
    replies = sum(len(p.exchanges) for p in platforms)
    complete = sum(p.complete for p in platforms)
    stopped = sum(p.stopped for p in platforms)
    conversations = sum(p.conversations for p in platforms)
    per_platform = ", ".join(f"{p.name} {len(p.exchanges)}" for p in platforms)
    ended = f"{complete} of {replies} complete" + (f", {stopped} stopped" if stopped else "")
    lines = [
        "",
        "── summary " + "─" * 60,
        f"replies: {ended} ({per_platform}) in {conversations} conversations",
        "",
        *_table(platforms),
        "",
    ]
    for platform in platforms:
        lines.extend(_calls(platform))
    lines.append("")
    lines.extend(_replies(platforms))
    lines += [
        "",
        f"database: {totals.db_rows_written} rows written for both platforms ({totals.storage})",
        f"wall time: {totals.wall_time:.1f} s (bridge up after {totals.startup:.1f} s)",
    ]
    return lines


def _table(platforms: Sequence[PlatformReport]) -> list[str]:
    rows: list[tuple[str, list[str]]] = [
        ("replies", [str(len(p.exchanges)) for p in platforms]),
        ("API calls", [str(sum(p.counts.calls.values())) for p in platforms]),
        ("edits and appends", [str(p.counts.edits) for p in platforms]),
        ("429s", [str(p.counts.rate_limited) for p in platforms]),
        ("first text, median", [_median(p, "first_text_at") for p in platforms]),
        ("first text, slowest", [_slowest(p, "first_text_at") for p in platforms]),
        ("whole reply, median", [_median(p, "done_at") for p in platforms]),
        ("tokens in / out", [_tokens(p) for p in platforms]),
    ]
    header = f"  {'':<22}" + "".join(f"{p.name:>16}" for p in platforms)
    body = [f"  {name:<22}" + "".join(f"{v:>16}" for v in values) for name, values in rows]
    return [header, *body]


def _calls(platform: PlatformReport) -> list[str]:
    kind = "Web API calls by method" if platform.name == "slack" else "REST calls by route"
    ranked = sorted(platform.counts.calls.items(), key=lambda item: (-item[1], item[0]))
    return [f"{platform.name} {kind}:"] + [f"  {count:>5}  {name}" for name, count in ranked]


def _replies(platforms: Sequence[PlatformReport]) -> list[str]:
    lines = ["replies (from alice's message: first text / whole reply):"]
    where = max((len(label) for p in platforms for label in p.labels.values()), default=0)
    for platform in platforms:
        for exchange in platform.exchanges:
            prompt = exchange.prompt if len(exchange.prompt) <= 34 else exchange.prompt[:33] + "…"
            first = _seconds(exchange.since_sent(exchange.first_text_at))
            whole = _seconds(exchange.since_sent(exchange.done_at))
            messages = len(exchange.final_texts)
            lines.append(
                f"  {platform.name:<8}{platform.labels[exchange]:<{where}}  {prompt:<34}  "
                f"{first:>7} / {whole:>7}  {exchange.updates:>2} updates  {messages} msg  "
                f"{exchange.status or 'unfinished'}"
            )
    return lines


def _durations(platform: PlatformReport, field: str) -> list[float]:
    values = [exchange.since_sent(getattr(exchange, field)) for exchange in platform.exchanges]
    return [value for value in values if value is not None]


def _median(platform: PlatformReport, field: str) -> str:
    values = _durations(platform, field)
    return _seconds(statistics.median(values)) if values else "–"


def _slowest(platform: PlatformReport, field: str) -> str:
    values = _durations(platform, field)
    return _seconds(max(values)) if values else "–"


def _tokens(platform: PlatformReport) -> str:
    used = [exchange.usage for exchange in platform.exchanges if exchange.usage is not None]
    if not used:
        return "–"
    prompt = sum(usage.prompt_tokens for usage in used)
    completion = sum(usage.completion_tokens for usage in used)
    return f"{prompt:,} / {completion:,}"


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"
