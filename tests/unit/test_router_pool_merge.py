"""How a router pool merges its workers' answers, and that one failed worker fails a mutation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zerodown.errors import RouterError, RouterUnavailable
from zerodown.metrics.series import Histogram
from zerodown.routers.base import (
    DrainResult,
    RouteSpec,
    RouteStatus,
    TargetHealth,
    TargetSpec,
    TargetStatus,
)
from zerodown.routers.builtin.client import BuiltinRouter
from zerodown.routers.builtin.pool import (
    WorkerPoolRouter,
    merge_drain_results,
    merge_health,
    merge_metrics,
    merge_route_statuses,
    worker_dirs,
    worker_state_dir,
)

H, U, X = TargetHealth.HEALTHY, TargetHealth.UNHEALTHY, TargetHealth.UNKNOWN


def _route(*targets: tuple[str, TargetHealth, int, bool]) -> RouteStatus:
    return RouteStatus(
        RouteSpec(service="web"),
        tuple(
            TargetStatus(TargetSpec("web", name, "127.0.0.1", 9000), health, draining, inflight)
            for name, health, inflight, draining in targets
        ),
    )


def test_health_is_healthy_only_when_every_worker_agrees() -> None:
    """HEALTHY needs all workers; one UNHEALTHY wins; anything else is UNKNOWN."""
    assert merge_health([H, H]) is H
    assert merge_health([H, U]) is U
    assert merge_health([H, X]) is X
    assert merge_health([]) is X


def test_status_sums_inflight_and_merges_health_draining_and_missing_targets() -> None:
    """In-flight summed; draining if any worker drains; a target one worker lacks is UNKNOWN."""
    worker0 = [_route(("a", H, 2, False), ("b", H, 1, False), ("c", H, 0, False))]
    worker1 = [_route(("a", H, 3, False), ("b", U, 0, True))]
    [route] = merge_route_statuses([worker0, worker1])
    merged = {t.spec.target_id: t for t in route.targets}
    assert (merged["a"].health, merged["a"].inflight, merged["a"].draining) == (H, 5, False)
    assert (merged["b"].health, merged["b"].inflight, merged["b"].draining) == (U, 1, True)
    assert merged["c"].health is X
    assert route.healthy_count == 1


def test_drain_results_sum_counts_and_keep_the_longest_time() -> None:
    """finished and forced are summed; seconds is the slowest worker's."""
    merged = merge_drain_results([DrainResult("a", 1.5, 3, 0), DrainResult("a", 2.5, 4, 1)])
    assert merged == DrainResult("a", 2.5, 7, 1)


def _point(requests: int, latencies: list[float], **extra: Any) -> dict[str, Any]:
    histogram = Histogram()
    for ms in latencies:
        histogram.add(ms)
    return {
        "at": 100,
        "service": "web",
        "revision": "r1",
        "target": "a",
        "requests": requests,
        "2xx": requests,
        "3xx": 0,
        "4xx": 0,
        "5xx": 0,
        "upstream_errors": 0,
        "latency_ms": {"sum": sum(latencies), "max": max(latencies), "min": min(latencies)},
        "inflight": 1,
        "histogram": histogram.to_json(),
        **extra,
    }


def test_metrics_add_counters_histograms_and_inflight_per_target() -> None:
    """Two workers' datapoints and totals of one target become one: the counts added, the merged
    p99 taken from the added histograms, in-flight summed, health merged, health points worst."""
    fast, slow = [1.0] * 98, [50.0, 60.0]
    worker0 = {
        "period": 10,
        "now": 105.0,
        "current": 100,
        "datapoints": [_point(98, fast)],
        "health": [{"at": 100, "service": "web", "healthy": 2, "unhealthy": 0, "serving": 2,
                    "zero_healthy_seconds": 0.0}],
        "totals": [{**_point(98, fast, health="healthy"), "at": None}],
    }  # fmt: skip
    worker1 = {
        "period": 10,
        "now": 106.0,
        "current": 100,
        "datapoints": [_point(2, slow)],
        "health": [{"at": 100, "service": "web", "healthy": 1, "unhealthy": 1, "serving": 1,
                    "zero_healthy_seconds": 0.5}],
        "totals": [{**_point(2, slow, health="unhealthy"), "at": None}],
    }  # fmt: skip
    merged = merge_metrics([worker0, worker1])
    [point] = merged["datapoints"]
    assert point["requests"] == 100 and point["2xx"] == 100 and point["inflight"] == 2
    assert sum(point["histogram"].values()) == 100
    assert point["latency_ms"]["max"] == 60.0 and point["latency_ms"]["min"] == 1.0
    assert point["latency_ms"]["avg"] == pytest.approx((98 + 110) / 100, abs=0.001)
    assert 1.0 < point["latency_ms"]["p99"] <= 60.0  # the slow worker's tail shows in the p99
    [health] = merged["health"]
    assert (health["healthy"], health["unhealthy"], health["serving"]) == (1, 1, 1)
    assert health["zero_healthy_seconds"] == 0.5
    [total] = merged["totals"]
    assert total["requests"] == 100 and total["health"] == "unhealthy"
    assert merged["now"] == 106.0 and merged["period"] == 10


class _Worker(BuiltinRouter):
    """A worker whose control socket answers one way: ok, or a refusal (no daemon needed)."""

    def __init__(self, error: RouterError | None) -> None:
        super().__init__(Path("/nonexistent"))
        self.error = error
        self.calls: list[str] = []

    async def request(self, op: str, args: Any = None, *, timeout: float | None = None) -> Any:
        self.calls.append(op)
        if self.error is not None:
            raise self.error
        return None


async def test_a_mutation_reaches_every_worker_and_fails_if_one_fails() -> None:
    """set_pool_weights is sent to all workers; one refusal makes it fail, naming that worker."""
    pool = WorkerPoolRouter(Path("/nonexistent"), 3)
    pool.workers = [_Worker(None), _Worker(RouterError("no route")), _Worker(None)]
    with pytest.raises(RouterError, match=r"1 of 3 router workers.*worker 1: no route"):
        await pool.set_pool_weights("web", {"a": 10})
    calls = [w.calls for w in pool.workers]  # type: ignore[attr-defined]
    assert calls == [["set_pool_weights"]] * 3


async def test_all_workers_down_is_router_unavailable() -> None:
    """When no worker answers the pool raises RouterUnavailable, like a lone router."""
    pool = WorkerPoolRouter(Path("/nonexistent"), 2)
    pool.workers = [_Worker(RouterUnavailable("down")), _Worker(RouterUnavailable("down"))]
    with pytest.raises(RouterUnavailable):
        await pool.status()


def test_worker_zero_keeps_todays_directory_and_others_are_found(tmp_path: Path) -> None:
    """Worker 0 is the state dir itself; `router-<k>` siblings are found in order."""
    assert worker_state_dir(tmp_path, 0) == tmp_path
    for k in (2, 1):
        worker_state_dir(tmp_path, k).mkdir()
    (tmp_path / "router-x").mkdir()
    assert worker_dirs(tmp_path) == [tmp_path, tmp_path / "router-1", tmp_path / "router-2"]
