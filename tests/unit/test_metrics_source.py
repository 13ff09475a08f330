"""`MetricsSource`: the one seam every metrics reader uses, and `metrics_source()`, the one place
that asks a router whether it measures traffic."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from zerodown.metrics.series import Histogram
from zerodown.metrics.source import RevisionStats, metrics_source

SRC = Path(__file__).resolve().parents[2] / "src" / "zerodown"


def _point(at: int, route: str, revision: str, requests: int, errors: int) -> dict[str, Any]:
    histogram = Histogram()
    histogram.add(30.0, requests)
    return {
        "at": at,
        "service": route,
        "revision": revision,
        "target": f"{revision}-1",
        "requests": requests,
        "2xx": requests - errors,
        "5xx": errors,
        "latency_ms": {"sum": 30.0 * requests, "max": 30.0, "min": 30.0},
        "histogram": histogram.to_json(),
    }


class MeasuringRouter:
    """A router with the `TrafficMetrics` capability; records every `since` asked for."""

    name = "fake"

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.asked: list[float | None] = []

    async def metrics(self, since: float | None = None) -> dict[str, Any]:
        self.asked.append(since)
        return self.answer


class BlindRouter:
    """A router without the capability."""

    name = "blind"


async def test_a_measuring_router_answers_reports_and_per_revision_stats() -> None:
    """The router's answer is the report; revision stats merge its datapoints of one route per
    revision from the 10 s period of `since` on, other routes and older periods left out."""
    answer = {
        "period": 10,
        "datapoints": [
            _point(100, "api.prod", "r1", 40, 0),
            _point(110, "api.prod", "r1", 60, 0),
            _point(110, "api.prod", "r2", 20, 5),
            _point(110, "web.prod", "r2", 999, 999),  # another route
            _point(90, "api.prod", "r2", 500, 500),  # before the window
        ],
    }
    router = MeasuringRouter(answer)
    source = metrics_source(router)  # type: ignore[arg-type]  # a fake, not a whole Router
    assert source.measures and source.measured_by == "the fake router"
    assert await source.report(since=5.0) is answer
    stats = await source.revision_stats("api.prod", ["r1", "r2", "r3"], since=104.0)
    assert router.asked == [5.0, 100]  # the window starts at the period holding `since`
    assert stats["r1"] == RevisionStats("r1", 100, 0, stats["r1"].p95_ms)
    assert stats["r2"].requests == 20 and stats["r2"].errors_5xx == 5
    assert stats["r1"].p95_ms is not None and 29.0 < stats["r1"].p95_ms < 34.0
    assert stats["r3"] == RevisionStats("r3")  # no traffic: zero requests


async def test_a_router_that_measures_nothing_gets_empty_answers() -> None:
    """Without the capability: `measures` is False, reports are empty and every revision has
    zero requests (the canary stays inconclusive), named for messages."""
    source = metrics_source(BlindRouter())  # type: ignore[arg-type]
    assert not source.measures and source.measured_by == "the blind router"
    report = await source.report(since=0.0)
    assert report["datapoints"] == [] and report["health"] == [] and report["totals"] == []
    assert await source.revision_stats("api.prod", ["r1"], since=0.0) == {"r1": RevisionStats("r1")}


def test_no_reader_asks_the_router_for_its_capability_itself() -> None:
    """Only `metrics/source.py` checks `TrafficMetrics`; every other module reads a
    `MetricsSource` (the routers implement the capability, they do not probe it)."""
    probing = re.compile(r"isinstance\([^)]*TrafficMetrics\)|\.metrics\(since")
    offenders = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if probing.search(path.read_text())
        and path.relative_to(SRC).parts[0] != "routers"
        and path != SRC / "metrics" / "source.py"
    ]
    assert offenders == []
