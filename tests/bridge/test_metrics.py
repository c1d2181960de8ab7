"""The metrics registry and its Prometheus text exposition (format 0.0.4), without any server."""

from __future__ import annotations

import math
import re
import threading

import pytest

from bridge.metrics import Counter, Histogram, Registry, escape_label_value, format_value

# One sample line of the 0.0.4 text format: name, optional {labels}, value.
SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\\\|\\"|\\n)*",?)*\})?'
    r" (NaN|[+-]Inf|-?[0-9]+(\.[0-9]+)?(e[+-]?[0-9]+)?)$"
)


def test_a_labelled_counter_renders_help_type_and_one_line_per_series() -> None:
    registry = Registry()
    replies = registry.counter("bridge_replies_total", "Replies by status.", ["platform", "status"])
    replies.labels("slack", "complete").inc()
    replies.labels(platform="slack", status="complete").inc(2)
    replies.labels("discord", "failed").inc()
    assert registry.render() == (
        "# HELP bridge_replies_total Replies by status.\n"
        "# TYPE bridge_replies_total counter\n"
        'bridge_replies_total{platform="discord",status="failed"} 1\n'
        'bridge_replies_total{platform="slack",status="complete"} 3\n'
    )


def test_label_values_and_help_text_are_escaped() -> None:
    registry = Registry()
    counter = registry.counter("odd_total", 'Help with a \\ backslash\nand "quotes".', ["path"])
    counter.labels('C:\\dir\n"x"').inc()
    lines = registry.render().splitlines()
    assert lines[0] == '# HELP odd_total Help with a \\\\ backslash\\nand "quotes".'
    assert lines[2] == 'odd_total{path="C:\\\\dir\\n\\"x\\""} 1'
    assert escape_label_value('a"b') == 'a\\"b'
    assert all(SAMPLE.match(line) for line in lines if not line.startswith("#"))


def test_an_unlabelled_metric_shows_zero_before_its_first_use() -> None:
    registry = Registry()
    registry.counter("events_total", "Events.")
    registry.gauge("replies_in_flight", "Replies.")
    registry.gauge("by_platform", "Labelled: no series until first used.", ["platform"])
    assert registry.render().splitlines() == [
        "# HELP events_total Events.",
        "# TYPE events_total counter",
        "events_total 0",
        "# HELP replies_in_flight Replies.",
        "# TYPE replies_in_flight gauge",
        "replies_in_flight 0",
        "# HELP by_platform Labelled: no series until first used.",
        "# TYPE by_platform gauge",
    ]


def test_a_gauge_goes_up_down_and_can_be_set() -> None:
    registry = Registry()
    active = registry.gauge("active", "Active.", ["platform"])
    active.labels("slack").inc()
    active.labels("slack").inc()
    active.labels("slack").dec()
    active.labels("discord").set(0.5)
    assert active.value("slack") == 1
    assert registry.render().splitlines()[2:] == [
        'active{platform="discord"} 0.5',
        'active{platform="slack"} 1',
    ]


def test_a_histogram_has_cumulative_buckets_an_inf_bucket_a_sum_and_a_count() -> None:
    registry = Registry()
    latency = registry.histogram("ttft_seconds", "Latency.", ["platform"], buckets=[1, 0.5, 2.5])
    for value in (0.2, 0.5, 0.7, 3.0, 10.0):
        latency.labels("slack").observe(value)
    assert registry.render().splitlines() == [
        "# HELP ttft_seconds Latency.",
        "# TYPE ttft_seconds histogram",
        'ttft_seconds_bucket{platform="slack",le="0.5"} 2',  # a value on a bound counts in it
        'ttft_seconds_bucket{platform="slack",le="1"} 3',
        'ttft_seconds_bucket{platform="slack",le="2.5"} 3',
        'ttft_seconds_bucket{platform="slack",le="+Inf"} 5',
        'ttft_seconds_sum{platform="slack"} 14.4',
        'ttft_seconds_count{platform="slack"} 5',
    ]


def test_an_unlabelled_histogram_renders_le_as_its_only_label() -> None:
    registry = Registry()
    registry.histogram("wait_seconds", "Wait.", buckets=[0.25]).observe(0.1)
    assert registry.render().splitlines()[2:] == [
        'wait_seconds_bucket{le="0.25"} 1',
        'wait_seconds_bucket{le="+Inf"} 1',
        "wait_seconds_sum 0.1",
        "wait_seconds_count 1",
    ]


def test_values_are_written_as_prometheus_parses_them() -> None:
    assert format_value(3.0) == "3"
    assert format_value(0.25) == "0.25"
    assert format_value(math.inf) == "+Inf" and format_value(-math.inf) == "-Inf"
    assert format_value(math.nan) == "NaN"
    assert format_value(1e20) == "1e+20"


def test_misuse_is_refused_with_a_clear_error() -> None:
    registry = Registry()
    counter = registry.counter("c_total", "C.", ["platform"])
    with pytest.raises(ValueError, match="only goes up"):
        counter.labels("slack").inc(-1)
    with pytest.raises(ValueError, match="takes labels"):
        counter.labels("slack", "extra")
    with pytest.raises(ValueError, match="takes labels"):
        counter.labels(kind="x")
    with pytest.raises(ValueError, match="use .labels"):
        counter.inc()
    with pytest.raises(ValueError, match="already registered"):
        registry.counter("c_total", "Again.")
    with pytest.raises(ValueError, match="invalid metric name"):
        Counter("bad-name", "x")
    with pytest.raises(ValueError, match="invalid label name"):
        Counter("ok_total", "x", ["__reserved"])
    with pytest.raises(ValueError, match="'le'"):
        Histogram("h", "x", ["le"])


def test_increments_from_several_threads_are_all_counted() -> None:
    counter = Registry().counter("hits_total", "Hits.", ["worker"])
    latency = Histogram("work_seconds", "Work.", buckets=[1.0])

    def work() -> None:
        for _ in range(20_000):
            counter.labels("w").inc()
            latency.observe(0.5)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.value("w") == 160_000
    assert "work_seconds_count 160000" in "\n".join(latency.render())


def test_every_line_of_a_full_render_is_valid_exposition_text() -> None:
    registry = Registry()
    registry.counter("a_total", "A.", ["x"]).labels('q"uote').inc(1.5)
    registry.gauge("b", "B.").set(-2)
    registry.histogram("c_seconds", "C.", ["p"]).labels("slack").observe(0.3)
    text = registry.render()
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# "):
            assert re.match(r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$", line), line
        else:
            assert SAMPLE.match(line), line
