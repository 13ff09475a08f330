"""`MetricsCollector`: rolls the router's 10 s datapoints up into per-minute rows of the store.

Each call to `collect` writes every minute that ended since the last one written (at most the
router's memory, 3 h), per service and revision plus one whole-service row (revision "") with the
health numbers. Writing a minute again replaces its rows, so a repeated or concurrent call
changes nothing. `zerodown serve` calls it periodically.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from zerodown.clock import Clock, SystemClock
from zerodown.errors import StoreError
from zerodown.metrics.series import RETENTION, Aggregate, aggregate, period_start
from zerodown.metrics.source import MetricsSource
from zerodown.store.base import HistoryStore
from zerodown.store.metrics_schema import MetricMinuteRow

MINUTE = 60


def minute_rows(metrics: Mapping[str, Any], minutes: set[int]) -> list[dict[str, Any]]:
    """`metric_minutes` rows for the given minute starts, from a router `metrics` answer."""
    points = [p for p in metrics.get("datapoints", ()) if period_start(p["at"], MINUTE) in minutes]
    rows: list[dict[str, Any]] = []
    with_minute = [{**p, "minute": period_start(p["at"], MINUTE)} for p in points]
    for group in aggregate(with_minute, by=("minute", "service", "revision")):
        if not group.key["revision"]:
            # The router's own answers (503 with no target, 413, ...) have no revision: they are
            # in the whole-service row below, whose key (revision "") they would collide with.
            continue
        rows.append(
            _row(group, int(group.key["minute"]), group.key["service"], group.key["revision"])
        )
    health: dict[tuple[int, str], list[Mapping[str, Any]]] = {}
    for point in metrics.get("health", ()):
        minute = period_start(point["at"], MINUTE)
        if minute in minutes:
            health.setdefault((minute, str(point["service"])), []).append(point)
    whole = {
        (int(g.key["minute"]), g.key["service"]): g
        for g in aggregate(with_minute, by=("minute", "service"))
    }
    for key in sorted(set(whole) | set(health)):
        minute, service = key
        group = whole.get(key) or Aggregate(key={})
        row = _row(group, minute, service, "")
        samples = health.get(key, [])
        if samples:
            row["healthy_min"] = min(int(p["healthy"]) for p in samples)
            row["unhealthy_max"] = max(int(p["unhealthy"]) for p in samples)
            row["zero_healthy_seconds"] = round(
                sum(float(p.get("zero_healthy_seconds", 0.0)) for p in samples), 3
            )
        rows.append(row)
    return rows


def _row(group: Aggregate, minute: int, service: str, revision: str) -> dict[str, Any]:
    timed = group.histogram.total
    return {
        "minute": float(minute),
        "service": service,
        "revision": revision,
        "requests": group.requests,
        "responses_2xx": group.responses["2xx"],
        "responses_3xx": group.responses["3xx"],
        "responses_4xx": group.responses["4xx"],
        "responses_5xx": group.responses["5xx"],
        "upstream_errors": group.upstream_errors,
        "latency_avg_ms": group.latency_avg_ms,
        "latency_p50_ms": group.p50,
        "latency_p95_ms": group.p95,
        "latency_p99_ms": group.p99,
        "latency_max_ms": group.latency_max_ms if timed else None,
        "histogram": group.histogram.to_json(),
        "healthy_min": None,
        "unhealthy_max": None,
        "zero_healthy_seconds": None,
    }


class MetricsCollector:
    """Pulls a `MetricsSource`'s datapoints and writes the minutes that ended into
    `metric_minutes`."""

    def __init__(
        self, source: MetricsSource, store: HistoryStore, *, clock: Clock | None = None
    ) -> None:
        engine = store.sql_engine()
        if engine is None:
            raise StoreError("metrics rollups need the SQL history store")
        self.source = source
        self.engine: Engine = engine
        self.clock: Clock = clock or SystemClock()
        self._last: float | None = None  # start of the newest minute written

    async def collect(self) -> int:
        """Write every minute that ended since the last call; return how many rows."""
        now = self.clock.time()
        ended = period_start(now, MINUTE)  # minutes starting before this have ended
        if self._last is None:
            self._last = await asyncio.to_thread(self._newest_minute)
        first = now - RETENTION if self._last is None else self._last + MINUTE
        first = period_start(max(first, now - RETENTION), MINUTE)
        if first >= ended:
            return 0
        metrics = await self.source.report(since=first)
        minutes = set(range(int(first), int(ended), MINUTE))
        rows = minute_rows(metrics, minutes)
        if rows:
            await asyncio.to_thread(self._write, rows)
        self._last = float(ended - MINUTE)
        return len(rows)

    def _newest_minute(self) -> float | None:
        with self.engine.connect() as connection:
            value = connection.execute(sa.select(sa.func.max(MetricMinuteRow.minute))).scalar()
        return None if value is None else float(value)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        table = sa.Table("metric_minutes", MetricMinuteRow.metadata)  # the mapped table
        with self.engine.begin() as connection:
            for row in rows:
                connection.execute(
                    sa.delete(table).where(
                        table.c.minute == row["minute"],
                        table.c.service == row["service"],
                        table.c.revision == row["revision"],
                    )
                )
            connection.execute(sa.insert(table), rows)


async def read_minutes(
    store: HistoryStore, *, service: str | None = None, since: float | None = None
) -> list[dict[str, Any]]:
    """Stored minute rows, oldest first (for KPIs, the dashboard and tests)."""
    engine = store.sql_engine()
    if engine is None:
        return []

    def read() -> list[dict[str, Any]]:
        query = sa.select(MetricMinuteRow.__table__).order_by(MetricMinuteRow.minute)
        if service is not None:
            query = query.where(MetricMinuteRow.service == service)
        if since is not None:
            query = query.where(MetricMinuteRow.minute >= since)
        with engine.connect() as connection:
            return [dict(row) for row in connection.execute(query).mappings()]

    return await asyncio.to_thread(read)
