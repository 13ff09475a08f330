"""Latency histograms, percentiles and aggregation of router datapoints; log metric filters;
the in-router recorder's periods and health; alarm presets in zerodown.yml."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from zerodown.config.model import EnvironmentConfig
from zerodown.metrics.logfilters import (
    ERROR_LINES,
    EXCEPTIONS,
    SLOW_QUERIES,
    LogTail,
    count_matches,
)
from zerodown.metrics.prometheus import render_prometheus
from zerodown.metrics.series import BOUNDS_MS, Histogram, aggregate, bucket_index
from zerodown.routers.base import RouteSpec, TargetHealth, TargetSpec
from zerodown.routers.builtin.recorder import MetricsRecorder
from zerodown.routers.builtin.table import RoutingTable


def test_bucket_index_puts_a_latency_in_the_bucket_whose_bounds_hold_it() -> None:
    for ms in (0.05, 0.1, 0.5, 1.0, 3.7, 250.0, 1999.0, 2000.0, 60_000.0):
        index = bucket_index(ms)
        assert ms <= BOUNDS_MS[index]
        assert index == 0 or ms > BOUNDS_MS[index - 1]


def test_merged_histograms_equal_one_histogram_of_all_latencies() -> None:
    rng = random.Random(7)
    latencies = [rng.lognormvariate(3, 1) for _ in range(3000)]
    whole, parts = Histogram(), [Histogram() for _ in range(3)]
    for i, ms in enumerate(latencies):
        whole.add(ms)
        parts[i % 3].add(ms)
    merged = Histogram()
    for part in parts:
        merged.merge(Histogram.from_json(part.to_json()))  # through JSON, as the router sends it
    assert merged.counts == whole.counts
    assert merged.percentile(95) == whole.percentile(95)


def test_percentiles_are_within_one_bucket_of_the_exact_value() -> None:
    rng = random.Random(3)
    latencies = sorted(rng.uniform(5, 500) for _ in range(5000))
    histogram = Histogram()
    for ms in latencies:
        histogram.add(ms)
    for pct in (50, 95, 99):
        exact = latencies[int(pct / 100 * len(latencies)) - 1]
        estimate = histogram.percentile(pct, max_ms=latencies[-1])
        assert estimate is not None and abs(estimate - exact) / exact < 0.1


def _point(revision: str, target: str, requests: int, errors: int, ms: float) -> dict[str, object]:
    histogram = Histogram()
    histogram.add(ms, requests)
    return {
        "at": 1000,
        "service": "api.prod",
        "revision": revision,
        "target": target,
        "requests": requests,
        "2xx": requests - errors,
        "5xx": errors,
        "latency_ms": {"sum": ms * requests, "max": ms, "min": ms},
        "histogram": histogram.to_json(),
    }


def test_aggregate_groups_by_revision_and_merges_targets() -> None:
    points = [
        _point("r1", "a", 100, 0, 10),
        _point("r1", "b", 100, 0, 10),
        _point("r2", "c", 50, 10, 100),
    ]
    by_revision = {g.key["revision"]: g for g in aggregate(points)}
    assert by_revision["r1"].requests == 200 and by_revision["r1"].error_rate == 0
    assert by_revision["r2"].errors_5xx == 10 and by_revision["r2"].error_rate == pytest.approx(0.2)
    assert by_revision["r2"].p95 == pytest.approx(100, rel=0.1)
    assert aggregate(points, since=1001) == []


def test_recorder_counts_per_target_and_measures_zero_healthy_seconds() -> None:
    now = [1000.0]
    table = RoutingTable()
    recorder = MetricsRecorder(table, now=lambda: now[0])
    table = recorder.table
    table.apply_route(RouteSpec("api.prod"))
    recorder.on_table_change()  # the daemon calls it on every change; zero healthy from 1000
    target = table.add_target(
        TargetSpec("api.prod", "i1", "127.0.0.1", 1, revision="r1"), healthy=False
    )
    now[0] = 1004.0
    table.set_health("api.prod", "i1", TargetHealth.HEALTHY)
    recorder.on_table_change()
    route = table.routes()[0]
    for status in (200, 200, 500):
        recorder.on_response(route, target, status, 0.02, False)
    now[0] = 1012.0
    snapshot = recorder.snapshot()
    (point,) = [p for p in snapshot["datapoints"] if p["at"] == 1000]
    assert (point["requests"], point["2xx"], point["5xx"], point["revision"]) == (3, 2, 1, "r1")
    health = {p["at"]: p for p in snapshot["health"]}
    # 1000-1004: the route had never served (a first deploy), so that is no downtime.
    assert health[1000]["zero_healthy_seconds"] == 0
    assert health[1010]["zero_healthy_seconds"] == 0 and health[1010]["healthy"] == 1
    families = {
        f.name: f for f in text_string_to_metric_families(render_prometheus(snapshot).decode())
    }
    assert families["zerodown_requests"].samples[0].value == 3
    assert families["zerodown_healthy_targets"].samples[0].value == 1


def test_log_filters_count_the_seed_patterns(tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    log.write_text(
        "2024-05-01 10:00:00 INFO started\n"
        "2024-05-01 10:00:01 ERROR db down\n"
        "java.lang.IllegalStateException: boom\n"
        "2024-05-01 10:00:02 WARN query took 1500 ms\n"
        "2024-05-01 10:00:03 WARN query took 20 ms\n"
    )
    counts = count_matches([log], [ERROR_LINES, EXCEPTIONS, SLOW_QUERIES], since=None)
    assert counts == {"error_lines": 1, "exceptions": 1, "slow_queries": 1}
    tail = LogTail([ERROR_LINES])
    assert tail.poll([log]) == {"error_lines": 0}  # a new file counts from its end
    with log.open("a") as handle:
        handle.write("ERROR again\nERROR half")
    assert tail.poll([log]) == {"error_lines": 1}  # the unfinished line waits
    with log.open("a") as handle:
        handle.write(" done\n")
    assert tail.poll([log]) == {"error_lines": 1}


def test_seed_preset_expands_to_the_four_seed_alarms() -> None:
    env = EnvironmentConfig(
        alarms=[{"preset": "seed"}, {"preset": "5xx-count", "name": "5xx-50", "threshold": 50}]
    )
    assert [a.name for a in env.alarms] == [
        "HealthyHostCount",
        "TargetResponseTime",
        "HTTPCode_5XX_Count",
        "UnHealthyHostCount",
        "5xx-50",
    ]
    assert env.alarms[-1].to_definition().threshold == 50
    with pytest.raises(ValueError, match="unique"):
        EnvironmentConfig(alarms=[{"preset": "seed"}, {"preset": "seed"}])
