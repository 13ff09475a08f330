"""Router metrics as data: 10 s datapoints with mergeable latency histograms, and aggregation.

A datapoint (one target, one 10 s period) is the JSON the router's `metrics` op returns:
`{"at", "service", "revision", "target", "requests", "2xx", "3xx", "4xx", "5xx",
"upstream_errors", "latency_ms": {"avg", "p50", "p95", "p99", "max", "min", "sum"}, "inflight",
"histogram": {"<bucket index>": count}}`. Buckets are fixed and log-spaced (10 % wide), so merging
datapoints adds counts and a merged percentile is as exact as one target's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PERIOD = 10  # seconds of one datapoint
RETENTION = 3 * 3600  # seconds of datapoints a router keeps in memory (rollups look back this far)
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")

# Bucket i holds latencies in (BOUNDS_MS[i-1], BOUNDS_MS[i]]; the last one is open-ended.
_FIRST_MS = 0.1
_GROWTH = 1.1
_BUCKETS = 160  # 0.1 ms .. ~400 s
BOUNDS_MS: tuple[float, ...] = tuple(_FIRST_MS * _GROWTH**i for i in range(_BUCKETS))
_LOG_GROWTH = math.log(_GROWTH)


def bucket_index(ms: float) -> int:
    """The histogram bucket of a latency in milliseconds (O(1))."""
    if ms <= _FIRST_MS:
        return 0
    index = math.ceil(math.log(ms / _FIRST_MS) / _LOG_GROWTH - 1e-9)
    return min(index, _BUCKETS)  # _BUCKETS: the overflow bucket


def bucket_upper(index: int) -> float:
    """The upper bound of bucket `index` in ms (infinity for the overflow bucket)."""
    return BOUNDS_MS[index] if index < _BUCKETS else math.inf


def period_start(at: float, period: int = PERIOD) -> int:
    """The unix start of the `period`-second period holding `at`."""
    return int(at // period) * period


@dataclass
class Histogram:
    """Latency bucket counts (sparse); merges by adding, so merged percentiles stay exact."""

    counts: dict[int, int] = field(default_factory=dict)

    def add(self, ms: float, n: int = 1) -> None:
        """Count `n` latencies of `ms` milliseconds."""
        index = bucket_index(ms)
        self.counts[index] = self.counts.get(index, 0) + n

    def merge(self, other: Histogram) -> None:
        """Add another histogram's counts to this one."""
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count

    @property
    def total(self) -> int:
        """How many latencies were counted."""
        return sum(self.counts.values())

    def percentile(self, pct: float, *, max_ms: float | None = None) -> float | None:
        """The `pct` percentile (0-100) in ms, interpolated inside its bucket; None when empty.

        `max_ms`, the largest latency seen, caps the answer (the top bucket is wide)."""
        total = self.total
        if total == 0:
            return None
        rank = max(1.0, pct / 100 * total)
        seen = 0
        for index in sorted(self.counts):
            count = self.counts[index]
            if seen + count >= rank:
                lower = BOUNDS_MS[index - 1] if index > 0 else 0.0
                upper = bucket_upper(index)
                if math.isinf(upper):
                    upper = max_ms if max_ms is not None else lower
                value = lower + (upper - lower) * (rank - seen) / count
                return min(value, max_ms) if max_ms is not None else value
            seen += count
        return max_ms  # not reached: rank <= total

    def to_json(self) -> dict[str, int]:
        """`{"<bucket index>": count}` (JSON keys are strings)."""
        return {str(index): count for index, count in sorted(self.counts.items())}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Histogram:
        """The inverse of `to_json`."""
        return cls({int(k): int(v) for k, v in (data or {}).items()})


@dataclass
class Aggregate:
    """Datapoints merged over a time range and grouped by some of their labels."""

    key: dict[str, str]
    requests: int = 0
    responses: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUS_CLASSES, 0))
    upstream_errors: int = 0
    latency_sum_ms: float = 0.0
    latency_max_ms: float = 0.0
    latency_min_ms: float | None = None
    inflight: int = 0
    datapoints: int = 0
    histogram: Histogram = field(default_factory=Histogram)

    @property
    def errors_5xx(self) -> int:
        """Responses with a 5xx status (proxy-made 502/503/504 included)."""
        return self.responses["5xx"]

    @property
    def error_rate(self) -> float:
        """5xx responses per request (0..1); 0 without requests."""
        return self.errors_5xx / self.requests if self.requests else 0.0

    @property
    def latency_avg_ms(self) -> float | None:
        """Mean latency in ms over the requests that have one."""
        timed = self.histogram.total
        return self.latency_sum_ms / timed if timed else None

    def percentile(self, pct: float) -> float | None:
        """Latency percentile in ms from the merged histogram."""
        return self.histogram.percentile(pct, max_ms=self.latency_max_ms)

    @property
    def p50(self) -> float | None:
        """Median latency in ms."""
        return self.percentile(50)

    @property
    def p95(self) -> float | None:
        """95th percentile latency in ms."""
        return self.percentile(95)

    @property
    def p99(self) -> float | None:
        """99th percentile latency in ms."""
        return self.percentile(99)

    def add(self, point: Mapping[str, Any]) -> None:
        """Merge one datapoint into this aggregate."""
        self.datapoints += 1
        self.requests += int(point.get("requests", 0))
        for name in STATUS_CLASSES:
            self.responses[name] += int(point.get(name, 0))
        self.upstream_errors += int(point.get("upstream_errors", 0))
        self.inflight = max(self.inflight, int(point.get("inflight", 0)))
        latency = point.get("latency_ms") or {}
        histogram = Histogram.from_json(point.get("histogram"))
        self.histogram.merge(histogram)
        if "sum" in latency:
            self.latency_sum_ms += float(latency["sum"])
        elif latency.get("avg") is not None:
            self.latency_sum_ms += float(latency["avg"]) * histogram.total
        if latency.get("max") is not None:
            self.latency_max_ms = max(self.latency_max_ms, float(latency["max"]))
        if latency.get("min") is not None:
            low = float(latency["min"])
            self.latency_min_ms = (
                low if self.latency_min_ms is None else min(low, self.latency_min_ms)
            )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (the CLI's and the API's shape)."""
        return {
            **self.key,
            "requests": self.requests,
            **self.responses,
            "upstream_errors": self.upstream_errors,
            "error_rate": round(self.error_rate, 6),
            "latency_ms": {
                "avg": _round(self.latency_avg_ms),
                "p50": _round(self.p50),
                "p95": _round(self.p95),
                "p99": _round(self.p99),
                "max": _round(self.latency_max_ms if self.histogram.total else None),
            },
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def aggregate(
    datapoints: Iterable[Mapping[str, Any]],
    by: Sequence[str] = ("service", "revision"),
    since: float | None = None,
    until: float | None = None,
) -> list[Aggregate]:
    """Merge datapoints with `since <= at < until`, one `Aggregate` per distinct `by` labels."""
    groups: dict[tuple[str, ...], Aggregate] = {}
    for point in datapoints:
        at = float(point.get("at", 0))
        if (since is not None and at < since) or (until is not None and at >= until):
            continue
        values = tuple(str(point.get(name, "")) for name in by)
        group = groups.get(values)
        if group is None:
            group = groups[values] = Aggregate(key=dict(zip(by, values, strict=True)))
        group.add(point)
    return [groups[key] for key in sorted(groups)]
