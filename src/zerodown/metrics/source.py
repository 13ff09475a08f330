"""`MetricsSource`: where the request metrics of routes come from, for everything that reads them.

The canary analysis, the alarms, Prometheus (`/metrics`), the per-minute rollups, the dashboard and
`zerodown metrics` all read through this one Protocol, and `metrics_source()` is the one place
that decides what answers it. Today that is the router's own measurement (`RouterMetrics`, over a
router with the `TrafficMetrics` capability: the built-in proxy's recorder, HAProxy's
`show stat`); a router that measures nothing gets `Unmeasured`. A source for a router whose
numbers live elsewhere (an ALB's in CloudWatch, for ECS) would be a third class here, chosen by
`metrics_source()`, that answers in the same shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from zerodown.metrics.series import PERIOD, aggregate, period_start
from zerodown.routers.base import Router, TrafficMetrics


@dataclass(frozen=True)
class RevisionStats:
    """One revision's traffic over the analysed window, as the source measured it."""

    revision: str
    requests: int = 0
    errors_5xx: int = 0
    p95_ms: float | None = None

    @property
    def error_rate(self) -> float:
        """5xx per request (0 without requests)."""
        return self.errors_5xx / self.requests if self.requests else 0.0


class MetricsSource(Protocol):
    """Request counts, status classes, latency and health of routes, per target and revision."""

    @property
    def measured_by(self) -> str:
        """Who measures, as messages name it ("the builtin router")."""
        ...

    @property
    def measures(self) -> bool:
        """False when nothing is measured: every canary analysis is inconclusive, alarms are not
        evaluated, Prometheus gets an empty page and there is nothing to roll up."""
        ...

    async def report(self, since: float | None = None) -> dict[str, Any]:
        """10 s datapoints from unix time `since` on (default: all kept), health per route and
        running totals, in the shape of `zerodown.metrics.series` (`period`, `now`, `current`,
        `datapoints`, `health`, `totals`)."""
        ...

    async def revision_stats(
        self, route: str, revisions: Sequence[str], *, since: float
    ) -> dict[str, RevisionStats]:
        """Requests, 5xx and p95 latency of each revision of `route` from the 10 s period of
        `since` on (a revision without traffic: zero requests); what the canary compares."""
        ...


def revision_stats_of(
    report: dict[str, Any], route: str, revisions: Sequence[str], *, start: float
) -> dict[str, RevisionStats]:
    """Merge a report's datapoints of `route` from `start` on, per revision in `revisions`."""
    found = {r: RevisionStats(r) for r in revisions}
    points = [p for p in report.get("datapoints", []) if p.get("service") == route]
    for group in aggregate(points, by=("revision",), since=start):
        revision = group.key.get("revision", "")
        if revision in found:
            found[revision] = RevisionStats(revision, group.requests, group.errors_5xx, group.p95)
    return found


class RouterMetrics:
    """`MetricsSource` over a router that measures the requests it routes (`TrafficMetrics`)."""

    measures = True

    def __init__(self, router: TrafficMetrics, measured_by: str) -> None:
        self.router = router
        self.measured_by = measured_by

    async def report(self, since: float | None = None) -> dict[str, Any]:
        """The router's own `metrics` answer."""
        return await self.router.metrics(since=since)

    async def revision_stats(
        self, route: str, revisions: Sequence[str], *, since: float
    ) -> dict[str, RevisionStats]:
        """The router's datapoints of `route` merged per revision from the period of `since`."""
        start = period_start(since)
        return revision_stats_of(await self.report(since=start), route, revisions, start=start)


class Unmeasured:
    """`MetricsSource` of a router that measures nothing: empty reports, zero requests."""

    measures = False

    def __init__(self, measured_by: str) -> None:
        self.measured_by = measured_by

    async def report(self, since: float | None = None) -> dict[str, Any]:
        """A report with no datapoints, no health and no totals."""
        return {"period": PERIOD, "datapoints": [], "health": [], "totals": []}

    async def revision_stats(
        self, route: str, revisions: Sequence[str], *, since: float
    ) -> dict[str, RevisionStats]:
        """Zero requests for every revision (the analysis stays inconclusive)."""
        return {r: RevisionStats(r) for r in revisions}


def metrics_source(router: Router) -> MetricsSource:
    """The metrics of the traffic `router` carries: its own measurement when it has the
    `TrafficMetrics` capability, else `Unmeasured`. The one place that asks a router whether it
    measures."""
    measured_by = f"the {router.name} router"
    if isinstance(router, TrafficMetrics):
        return RouterMetrics(router, measured_by)
    return Unmeasured(measured_by)
