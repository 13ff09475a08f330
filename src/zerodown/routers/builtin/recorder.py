"""`MetricsRecorder`: what the built-in router measures, kept as 10 s datapoints in memory.

The proxy calls `on_response` once per answered request (a `ProxyObserver`); the work there is
O(1): a few counters and one histogram bucket, in the current period's cell of that target and in
its running totals. Periods roll lazily, on the next request, table change or read, so an idle
router does no work. Health (healthy / unhealthy targets, seconds with no target able to take
traffic) is measured from the table's transitions, not sampled.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zerodown.metrics.series import BOUNDS_MS, PERIOD, RETENTION, Histogram, bucket_index
from zerodown.routers.base import TargetHealth
from zerodown.routers.builtin.table import Route, RoutingTable, Target

LOCAL = "-"  # the target of answers the proxy made itself (no healthy target, 413, ...)
_FIRST_BOUND_MS = BOUNDS_MS[0]  # latencies up to this go to bucket 0 (most requests, no log)
# Latency -> bucket, for latencies seen before: uvloop's clock counts whole milliseconds, so a
# router sees few distinct values and skips the logarithm. Bounded: other clocks rarely repeat.
_BUCKET_OF: dict[float, int] = {}
_BUCKET_OF_LIMIT = 4096


class _Cell:
    """Counters of one target over one period (or since the router started, for totals)."""

    __slots__ = (
        "by_class",
        "histogram",
        "inflight",
        "latency_max",
        "latency_min",
        "latency_sum",
        "requests",
        "revision",
        "touched",
        "upstream_errors",
    )

    def __init__(self, revision: str) -> None:
        self.requests = 0
        self.by_class = [0, 0, 0, 0, 0, 0]  # index status // 100: 1xx .. 5xx
        self.upstream_errors = 0
        self.latency_sum = 0.0
        self.latency_max = 0.0
        self.latency_min: float | None = None
        self.inflight = 0
        self.histogram = Histogram()
        self.revision = revision
        self.touched = 0.0

    def count(self, status: int, ms: float | None, upstream_error: bool, inflight: int) -> None:
        # Runs once per request: Histogram.add and min/max are spelled out to save calls.
        self.requests += 1
        status_class = status // 100
        self.by_class[5 if status_class > 5 else (status_class if status_class > 0 else 0)] += 1
        if upstream_error:
            self.upstream_errors += 1
        if ms is not None:
            self.latency_sum += ms
            if ms > self.latency_max:
                self.latency_max = ms
            if self.latency_min is None or ms < self.latency_min:
                self.latency_min = ms
            if ms <= _FIRST_BOUND_MS:
                index = 0
            else:
                known = _BUCKET_OF.get(ms)
                if known is None:
                    known = bucket_index(ms)
                    if len(_BUCKET_OF) < _BUCKET_OF_LIMIT:
                        _BUCKET_OF[ms] = known
                index = known
            counts = self.histogram.counts
            counts[index] = counts.get(index, 0) + 1
        if inflight > self.inflight:
            self.inflight = inflight

    def absorb(self, other: _Cell) -> None:
        """Add another cell's counts to this one (a closed period into the totals)."""
        self.requests += other.requests
        for index, n in enumerate(other.by_class):
            self.by_class[index] += n
        self.upstream_errors += other.upstream_errors
        self.latency_sum += other.latency_sum
        self.latency_max = max(self.latency_max, other.latency_max)
        if other.latency_min is not None and (
            self.latency_min is None or other.latency_min < self.latency_min
        ):
            self.latency_min = other.latency_min
        self.histogram.merge(other.histogram)
        self.inflight = max(self.inflight, other.inflight)

    def to_json(self, at: int, service: str, target: str) -> dict[str, Any]:
        timed = self.histogram.total
        max_ms = self.latency_max if timed else None
        return {
            "at": at,
            "service": service,
            "revision": self.revision,
            "target": target,
            "requests": self.requests,
            "2xx": self.by_class[2],
            "3xx": self.by_class[3],
            "4xx": self.by_class[4],
            "5xx": self.by_class[5],
            "upstream_errors": self.upstream_errors,
            "latency_ms": {
                "avg": round(self.latency_sum / timed, 3) if timed else None,
                "p50": _round(self.histogram.percentile(50, max_ms=max_ms)),
                "p95": _round(self.histogram.percentile(95, max_ms=max_ms)),
                "p99": _round(self.histogram.percentile(99, max_ms=max_ms)),
                "max": _round(max_ms),
                "min": _round(self.latency_min),
                "sum": round(self.latency_sum, 3),
            },
            "inflight": self.inflight,
            "histogram": self.histogram.to_json(),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass
class _RouteHealth:
    """One route's health now and over the current period."""

    healthy: int
    unhealthy: int
    serving: int  # targets that may take a request now (healthy, not draining, weight > 0)
    healthy_min: int
    unhealthy_max: int
    zero_seconds: float = 0.0
    mark: float = 0.0  # when zero_seconds was last brought up to date
    # A route that has never had a target serving is being set up (a first deploy), not down:
    # zero_seconds counts only once one has served.
    served: bool = False

    def advance(self, until: float) -> None:
        if self.serving == 0 and self.served and until > self.mark:
            self.zero_seconds += until - self.mark
        self.mark = max(self.mark, until)


def _route_counts(route: Route) -> tuple[int, int, int]:
    healthy = unhealthy = serving = 0
    for target in route.targets.values():
        if target.draining:
            continue
        if target.health is TargetHealth.HEALTHY:
            healthy += 1
            if route.in_rotation(target):
                serving += 1
        elif target.health is TargetHealth.UNHEALTHY:
            unhealthy += 1
    return healthy, unhealthy, serving


class MetricsRecorder:
    """Per target, per revision and per route counters in 10 s periods (a `ProxyObserver`)."""

    def __init__(
        self,
        table: RoutingTable,
        *,
        now: Callable[[], float] = time.time,
        period: int = PERIOD,
        retention: float = RETENTION,
    ) -> None:
        self.table = table
        self.period = period
        self.retention = retention
        self._now = now
        started = now()
        self._current_at = int(started // period) * period
        self._cells: dict[tuple[str, str], _Cell] = {}
        self._closed: deque[dict[str, Any]] = deque()
        self._health_closed: deque[dict[str, Any]] = deque()
        self._health: dict[str, _RouteHealth] = {}
        self._totals: dict[tuple[str, str], _Cell] = {}
        self.on_table_change()

    # -- the proxy's hot path ----------------------------------------------------------------

    def on_response(
        self,
        route: Route,
        target: Target | None,
        status: int,
        seconds: float,
        upstream_error: bool,
    ) -> None:
        """Count one answered request (or closed tunnel) of `route`."""
        now = self._now()
        if now >= self._current_at + self.period:
            self._roll(now)
        service = route.spec.service
        if target is None:
            key, revision, inflight = (service, LOCAL), "", 0
        else:
            spec = target.spec
            key, revision, inflight = (service, spec.target_id), spec.revision, target.inflight
        # A tunnel's "latency" is its lifetime: it would drown the request latencies.
        ms = None if status == 101 else seconds * 1000.0
        cell = self._cells.get(key)
        if cell is None or cell.revision != revision:
            cell = self._cells[key] = _Cell(revision)
        # Counted once, into the current period: periods join the totals when they close
        # (the hot path of every request stays one histogram update).
        cell.count(status, ms, upstream_error, inflight)

    # -- health from the table ----------------------------------------------------------------

    def on_table_change(self) -> None:
        """Recount healthy / unhealthy targets of every route (the table just changed)."""
        now = self._now()
        if now >= self._current_at + self.period:
            self._roll(now)
        routes = {route.spec.service: route for route in self.table.routes()}
        for service in list(self._health):
            if service not in routes:
                state = self._health.pop(service)
                state.advance(now)
                self._health_closed.append(self._health_point(service, state, self._current_at))
        for service, route in routes.items():
            healthy, unhealthy, serving = _route_counts(route)
            known = self._health.get(service)
            if known is None:
                self._health[service] = _RouteHealth(
                    healthy, unhealthy, serving, healthy, unhealthy, mark=now, served=serving > 0
                )
                continue
            state = known
            state.advance(now)
            state.healthy, state.unhealthy, state.serving = healthy, unhealthy, serving
            state.served = state.served or serving > 0
            state.healthy_min = min(state.healthy_min, healthy)
            state.unhealthy_max = max(state.unhealthy_max, unhealthy)

    # -- reading ------------------------------------------------------------------------------

    def snapshot(self, since: float | None = None) -> dict[str, Any]:
        """The `metrics` op's answer: datapoints (the running period last), health, totals."""
        now = self._now()
        if now >= self._current_at + self.period:
            self._roll(now)
        floor = -1.0 if since is None else float(since)
        datapoints = [p for p in self._closed if p["at"] >= floor]
        health = [p for p in self._health_closed if p["at"] >= floor]
        if self._current_at >= floor:
            datapoints += [
                cell.to_json(self._current_at, service, target)
                for (service, target), cell in self._cells.items()
            ]
            for service, state in self._health.items():
                state.advance(now)
                health.append(self._health_point(service, state, self._current_at))
        return {
            "period": self.period,
            "now": round(now, 3),
            "current": self._current_at,
            "datapoints": datapoints,
            "health": health,
            "totals": self._totals_json(),
        }

    def _totals_json(self) -> list[dict[str, Any]]:
        gauges = {
            (route.spec.service, target.spec.target_id): target
            for route in self.table.routes()
            for target in route.targets.values()
        }
        combined: dict[tuple[str, str], _Cell] = {}
        for key, cell in [*self._totals.items(), *self._cells.items()]:
            into = combined.get(key)
            if into is None or into.revision != cell.revision:
                into = combined[key] = _Cell(cell.revision)
            into.absorb(cell)
        result = []
        for (service, target_id), cell in combined.items():
            point = cell.to_json(0, service, target_id)
            del point["at"]
            live = gauges.get((service, target_id))
            point["inflight"] = live.inflight if live is not None else 0
            point["health"] = live.health.value if live is not None else "gone"
            result.append(point)
        for key, target in gauges.items():
            if key not in combined:
                result.append(
                    {
                        "service": key[0],
                        "revision": target.spec.revision,
                        "target": key[1],
                        "requests": 0,
                        "inflight": target.inflight,
                        "health": target.health.value,
                    }
                )
        return result

    # -- periods ------------------------------------------------------------------------------

    def _health_point(self, service: str, state: _RouteHealth, at: int) -> dict[str, Any]:
        return {
            "at": at,
            "service": service,
            "healthy": state.healthy_min,
            "unhealthy": state.unhealthy_max,
            "serving": state.serving,
            "zero_healthy_seconds": round(min(state.zero_seconds, float(self.period)), 3),
        }

    def _roll(self, now: float) -> None:
        """Close the current period (and any idle ones after it) and open the one holding now."""
        period = self.period
        for route in self.table.routes():  # long streams show as in flight though nothing ends
            for target in route.targets.values():
                if target.inflight:
                    cell = self._cells.get((route.spec.service, target.spec.target_id))
                    if cell is None:
                        cell = _Cell(target.spec.revision)
                        self._cells[(route.spec.service, target.spec.target_id)] = cell
                    cell.inflight = max(cell.inflight, target.inflight)
        for (service, target_id), cell in self._cells.items():
            self._closed.append(cell.to_json(self._current_at, service, target_id))
            total = self._totals.get((service, target_id))
            if total is None or total.revision != cell.revision:
                total = self._totals[(service, target_id)] = _Cell(cell.revision)
            total.absorb(cell)
            total.touched = now
        self._cells = {}
        new_at = int(now // period) * period
        oldest_kept = new_at - int(self.retention)
        at = self._current_at
        while at < new_at:
            if at >= oldest_kept:
                for service, state in self._health.items():
                    state.advance(at + period)
                    self._health_closed.append(self._health_point(service, state, at))
                    state.zero_seconds = 0.0
                    state.healthy_min, state.unhealthy_max = state.healthy, state.unhealthy
            at = max(at + period, min(new_at, oldest_kept)) if at < oldest_kept else at + period
        for state in self._health.values():
            state.zero_seconds = 0.0
            state.mark = max(state.mark, float(new_at))
            state.healthy_min, state.unhealthy_max = state.healthy, state.unhealthy
        self._current_at = new_at
        while self._closed and self._closed[0]["at"] < oldest_kept:
            self._closed.popleft()
        while self._health_closed and self._health_closed[0]["at"] < oldest_kept:
            self._health_closed.popleft()
        stale = [
            key for key, cell in self._totals.items() if cell.touched < oldest_kept
        ]  # targets idle for the whole retention
        for key in stale:
            del self._totals[key]
