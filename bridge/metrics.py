"""A small, dependency-free metrics registry: counters, gauges and histograms with labels,
rendered in the Prometheus text exposition format 0.0.4. The ops adapter serves `render()`.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# Seconds; spans a fast local model's first token to a long reply from a slow one.
LATENCY_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def format_value(value: float) -> str:
    """A sample value as Prometheus parses it (Go's ParseFloat): integers without a fraction."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label_text(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


class _Value:
    """One labelled series of a counter or gauge."""

    __slots__ = ("_lock", "_monotonic", "value")

    def __init__(self, lock: threading.Lock, *, monotonic: bool) -> None:
        self._lock = lock
        self._monotonic = monotonic
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if self._monotonic and amount < 0:
            raise ValueError("a counter only goes up")
        with self._lock:
            self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        if self._monotonic:
            raise ValueError("a counter only goes up")
        with self._lock:
            self.value -= amount

    def set(self, value: float) -> None:
        if self._monotonic:
            raise ValueError("a counter cannot be set")
        with self._lock:
            self.value = float(value)


class _Observations:
    """One labelled series of a histogram: a count per bucket (not cumulative), sum and count."""

    __slots__ = ("_bounds", "_lock", "buckets", "count", "sum")

    def __init__(self, lock: threading.Lock, bounds: tuple[float, ...]) -> None:
        self._lock = lock
        self._bounds = bounds
        self.buckets = [0] * len(bounds)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        with self._lock:
            for index, bound in enumerate(self._bounds):
                if value <= bound:
                    self.buckets[index] += 1
                    break
            self.sum += value
            self.count += 1


S = TypeVar("S", _Value, _Observations)


class _Metric(Generic[S]):
    kind = ""

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        if not _METRIC_NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labelnames:
            if not _LABEL_NAME.match(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r}")
        if len(set(labelnames)) != len(labelnames):
            raise ValueError(f"repeated label names in {name}")
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        # One lock per metric: asyncio needs none, but code run through to_thread may report too.
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], S] = {}
        if not self.labelnames:
            self._series[()] = self._new()

    def _new(self) -> S:
        raise NotImplementedError

    def labels(self, *values: str, **named: str) -> S:
        """The series for these label values (created at zero on first use)."""
        if values and named:
            raise ValueError("pass label values by position or by name, not both")
        if named:
            if set(named) != set(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {sorted(named)}")
            values = tuple(named[n] for n in self.labelnames)
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}")
        key = tuple(str(v) for v in values)
        series = self._series.get(key)
        if series is None:
            with self._lock:
                series = self._series.setdefault(key, self._new())
        return series

    def _unlabelled(self) -> S:
        if self.labelnames:
            raise ValueError(f"{self.name} has labels {self.labelnames}: use .labels(...)")
        return self._series[()]

    def _snapshot(self) -> list[tuple[tuple[str, ...], S]]:
        with self._lock:
            return sorted(self._series.items())

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {_escape_help(self.help)}"
        yield f"# TYPE {self.name} {self.kind}"
        yield from self._samples()

    def _samples(self) -> Iterable[str]:
        raise NotImplementedError


class Counter(_Metric[_Value]):
    """A count that only goes up; by convention its name ends in `_total`."""

    kind = "counter"

    def _new(self) -> _Value:
        return _Value(self._lock, monotonic=True)

    def inc(self, amount: float = 1.0) -> None:
        self._unlabelled().inc(amount)

    def value(self, *labels: str) -> float:
        return self.labels(*labels).value

    def _samples(self) -> Iterable[str]:
        for key, series in self._snapshot():
            yield f"{self.name}{_label_text(self.labelnames, key)} {format_value(series.value)}"


class Gauge(_Metric[_Value]):
    """A value that goes up and down (replies in flight, a connection's state)."""

    kind = "gauge"

    def _new(self) -> _Value:
        return _Value(self._lock, monotonic=False)

    def inc(self, amount: float = 1.0) -> None:
        self._unlabelled().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self._unlabelled().dec(amount)

    def set(self, value: float) -> None:
        self._unlabelled().set(value)

    def value(self, *labels: str) -> float:
        return self.labels(*labels).value

    def _samples(self) -> Iterable[str]:
        for key, series in self._snapshot():
            yield f"{self.name}{_label_text(self.labelnames, key)} {format_value(series.value)}"


class Histogram(_Metric[_Observations]):
    """Observations counted into cumulative `le` buckets, with their sum and count."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        if "le" in labelnames:
            raise ValueError("a histogram cannot have a label named 'le'")
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if len(set(bounds)) != len(bounds):
            raise ValueError("histogram buckets must be distinct")
        self.bounds = (*bounds, math.inf)
        super().__init__(name, help, labelnames)

    def _new(self) -> _Observations:
        return _Observations(self._lock, self.bounds)

    def observe(self, value: float) -> None:
        self._unlabelled().observe(value)

    def _samples(self) -> Iterable[str]:
        names = (*self.labelnames, "le")
        for key, series in self._snapshot():
            with self._lock:
                counts, total, count = list(series.buckets), series.sum, series.count
            cumulative = 0
            for bound, in_bucket in zip(self.bounds, counts, strict=True):
                cumulative += in_bucket
                labels = _label_text(names, (*key, format_bound(bound)))
                yield f"{self.name}_bucket{labels} {cumulative}"
            plain = _label_text(self.labelnames, key)
            yield f"{self.name}_sum{plain} {format_value(total)}"
            yield f"{self.name}_count{plain} {count}"


def format_bound(bound: float) -> str:
    """An `le` label value: "+Inf" for the last bucket, else the number as the Go client writes."""
    return "+Inf" if math.isinf(bound) else format_value(bound)


M = TypeVar("M", Counter, Gauge, Histogram)


class Registry:
    """The metrics of one process, in registration order."""

    def __init__(self) -> None:
        self._metrics: dict[str, Counter | Gauge | Histogram] = {}
        self._lock = threading.Lock()

    def register(self, metric: M) -> M:
        with self._lock:
            if metric.name in self._metrics:
                raise ValueError(f"metric {metric.name} is already registered")
            self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        return self.register(Counter(name, help, labelnames))

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self.register(Gauge(name, help, labelnames))

    def histogram(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        return self.register(Histogram(name, help, labelnames, buckets=buckets))

    def get(self, name: str) -> Counter | Gauge | Histogram | None:
        return self._metrics.get(name)

    def render(self) -> str:
        """Every metric in the text exposition format 0.0.4 (ends with a newline)."""
        with self._lock:
            metrics = list(self._metrics.values())
        lines = [line for metric in metrics for line in metric.render()]
        return "\n".join(lines) + "\n" if lines else ""
