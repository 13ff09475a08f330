"""Per-minute rollups into `metric_minutes`: revisions and the whole service, health and
downtime seconds, and writing the same minutes twice changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zerodown.clock import FakeClock
from zerodown.metrics.rollup import MetricsCollector, read_minutes
from zerodown.metrics.series import Histogram
from zerodown.metrics.source import metrics_source
from zerodown.store.sql import open_store


class FixedMetrics:
    """A router whose `metrics` answer is fixed (read through `metrics_source`)."""

    name = "fixed"

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer

    async def metrics(self, since: float | None = None) -> dict[str, Any]:
        return self.answer


def _point(at: int, revision: str, requests: int, errors: int) -> dict[str, Any]:
    histogram = Histogram()
    histogram.add(20.0, requests)
    return {
        "at": at,
        "service": "api.prod",
        "revision": revision,
        "target": f"{revision}-1",
        "requests": requests,
        "2xx": requests - errors,
        "5xx": errors,
        "latency_ms": {"sum": 20.0 * requests, "max": 20.0, "min": 20.0},
        "histogram": histogram.to_json(),
    }


async def test_collect_writes_each_ended_minute_once_per_revision_and_service(
    tmp_path: Path,
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'h.db'}")
    minute = 1_700_000_040  # a minute boundary
    answer = {
        "period": 10,
        "datapoints": [
            _point(minute, "r1", 100, 0),
            _point(minute + 10, "r2", 50, 5),
            _point(minute + 60, "r2", 10, 0),  # the running minute: not written yet
        ],
        "health": [
            {
                "at": minute + 10 * i,
                "service": "api.prod",
                "healthy": 2,
                "unhealthy": 0,
                "zero_healthy_seconds": 3.0 if i == 0 else 0.0,
            }
            for i in range(6)
        ],
    }
    clock = FakeClock(start=0.0, unix_start=minute + 65.0)
    collector = MetricsCollector(metrics_source(FixedMetrics(answer)), store, clock=clock)
    try:
        assert await collector.collect() == 3
        rows = {r["revision"]: r for r in await read_minutes(store)}
        assert set(rows) == {"", "r1", "r2"}
        assert rows["r2"]["responses_5xx"] == 5 and rows["r2"]["requests"] == 50
        assert rows[""]["requests"] == 150 and rows[""]["zero_healthy_seconds"] == 3.0
        assert rows[""]["healthy_min"] == 2 and rows["r1"]["healthy_min"] is None
        assert rows["r1"]["latency_p50_ms"] is not None
        again = MetricsCollector(metrics_source(FixedMetrics(answer)), store, clock=clock)
        again._last = None  # a fresh collector starts from the newest stored minute
        assert await again.collect() == 0
        collector._last = minute - 60.0  # forced to write the same minute again: replaced
        assert await collector.collect() == 3
        assert len(await read_minutes(store)) == 3
    finally:
        await store.close()


async def test_the_routers_own_answers_count_in_the_service_row_only(tmp_path: Path) -> None:
    """503s the router made itself (no target, revision "") go into the whole-service row: they
    used to get a per-revision row with the same key, and the insert failed (serve crashed)."""
    store = open_store(f"sqlite:///{tmp_path / 'h.db'}")
    minute = 1_700_000_040
    answer = {"period": 10, "datapoints": [_point(minute, "", 30, 30), _point(minute, "r1", 17, 0)]}
    collector = MetricsCollector(
        metrics_source(FixedMetrics(answer)), store, clock=FakeClock(unix_start=minute + 65.0)
    )
    try:
        assert await collector.collect() == 2
        rows = {r["revision"]: r for r in await read_minutes(store)}
        assert set(rows) == {"", "r1"}
        assert (rows[""]["requests"], rows[""]["responses_5xx"]) == (47, 30)
    finally:
        await store.close()
