"""Alarm evaluation with CloudWatch's semantics, pure apart from an injected clock.

`decide` is the rule of CloudWatch's user guide ("How alarm state is evaluated when data is
missing"): look at the evaluation range (N + 2 periods); with at least N real datapoints judge the
N newest of them; with fewer, fill the gap according to the missing-data treatment, except that
`missing` and `ignore` judge the real datapoints alone and know the "premature alarm" case.
`period_values` turns the router's metrics into one value per period; `AlarmEvaluator` keeps an
alarm's state and the history of its transitions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zerodown.alarms.model import (
    COUNT_METRICS,
    HEALTH_METRICS,
    LOG_PREFIX,
    AlarmDefinition,
    AlarmState,
    Comparison,
    MissingData,
)
from zerodown.clock import Clock, SystemClock
from zerodown.metrics.series import PERIOD, Histogram

Value = float | None  # None: no datapoint in that period


@dataclass(frozen=True)
class Verdict:
    """The state `decide` arrived at, and why."""

    state: AlarmState
    reason: str
    breaching: int  # breaching datapoints among those judged (fills included)
    judged: int  # datapoints judged (real ones plus fills)


def decide(alarm: AlarmDefinition, values: Sequence[Value], current: AlarmState) -> Verdict:
    """The alarm's state for the evaluation range `values` (oldest first, newest last)."""
    n, m = alarm.evaluation_periods, alarm.m
    values = list(values)[-alarm.evaluation_range :]
    flags = [None if v is None else alarm.comparison.breaches(v, alarm.threshold) for v in values]
    real = [(v, f) for v, f in zip(values, flags, strict=True) if v is not None and f is not None]
    treat = alarm.treat_missing_data
    if len(real) >= n:
        judged = real[-n:]
        hits = sum(1 for _, f in judged if f)
        return _verdict(alarm, hits, n, [v for v, _ in judged], filled="")
    shown = [v for v, _ in real]
    hits = sum(1 for _, f in real if f)
    gap = n - len(real)
    if treat is MissingData.BREACHING:
        return _verdict(alarm, hits + gap, n, shown, filled=f" and {gap} missing as breaching")
    if treat is MissingData.NOT_BREACHING:
        return _verdict(alarm, hits, n, shown, filled=f" and {gap} missing as not breaching")
    if not real:
        if treat is MissingData.IGNORE:
            return Verdict(current, "no datapoints: the state is kept (missing data ignored)", 0, 0)
        return Verdict(
            AlarmState.INSUFFICIENT_DATA,
            f"no datapoint in the last {len(values)} period(s) of {alarm.period} s",
            0,
            0,
        )
    if hits >= m:
        return _verdict(alarm, hits, len(real), shown, filled="")
    if len(real) < m and _premature(flags[-n:], m):
        if treat is MissingData.IGNORE:
            return Verdict(current, "a breach followed by missing data: the state is kept", hits, 0)
        return Verdict(
            AlarmState.ALARM,
            f"a breaching datapoint {m} or more periods old followed only by missing data "
            f"(threshold {alarm.threshold:g})",
            hits,
            len(real),
        )
    return _verdict(alarm, hits, len(real), shown, filled="")


def _premature(window: Sequence[bool | None], m: int) -> bool:
    """CloudWatch's rule: the oldest breaching datapoint of the last N is at least M periods
    old and everything newer is breaching or missing."""
    oldest = next((i for i, flag in enumerate(window) if flag), None)
    if oldest is None or len(window) - oldest < m:
        return False
    return all(flag is not False for flag in window[oldest:])


def _verdict(
    alarm: AlarmDefinition, hits: int, judged: int, shown: Sequence[float], *, filled: str
) -> Verdict:
    state = AlarmState.ALARM if hits >= alarm.m else AlarmState.OK
    word = {
        Comparison.GREATER: "greater than",
        Comparison.GREATER_OR_EQUAL: "greater than or equal to",
        Comparison.LESS: "less than",
        Comparison.LESS_OR_EQUAL: "less than or equal to",
    }[alarm.comparison]
    values = ", ".join(f"{v:.4g}" for v in shown)
    reason = (
        f"{hits} of the datapoints [{values}]{filled} were {word} the threshold "
        f"({alarm.threshold:g}); {alarm.m} of {alarm.evaluation_periods} make an ALARM"
    )
    return Verdict(state, reason, hits, judged)


# -- from router metrics to one value per period -----------------------------------------------


def _stat(samples: Sequence[float], statistic: str) -> float:
    if statistic == "sum":
        return math.fsum(samples)
    if statistic == "avg":
        return math.fsum(samples) / len(samples)
    if statistic == "min":
        return min(samples)
    if statistic == "max":
        return max(samples)
    ordered = sorted(samples)
    rank = max(1, math.ceil(float(statistic[1:]) / 100 * len(ordered)))
    return ordered[rank - 1]


def window_value(
    alarm: AlarmDefinition,
    metrics: Mapping[str, Any],
    service: str,
    start: float,
    end: float,
    *,
    revision: str | None = None,
    log_counts: Mapping[int, int] | None = None,
) -> Value:
    """The alarm's statistic over `[start, end)` for `service` (a route name); None if missing."""
    value, _ = window_sample(
        alarm, metrics, service, start, end, revision=revision, log_counts=log_counts
    )
    return value


def window_sample(
    alarm: AlarmDefinition,
    metrics: Mapping[str, Any],
    service: str,
    start: float,
    end: float,
    *,
    revision: str | None = None,
    log_counts: Mapping[int, int] | None = None,
) -> tuple[Value, int]:
    """`window_value` and the number of samples behind it (timed requests for latencies,
    datapoints for the other metrics): what a percentile's low-sample rule counts."""
    metric, statistic = alarm.metric, alarm.statistic
    if metric.startswith(LOG_PREFIX):
        if log_counts is None:
            return None, 0
        buckets = [float(c) for at, c in log_counts.items() if start <= at < end]
        return (_stat(buckets, statistic) if buckets else 0.0), len(buckets)
    if metric in HEALTH_METRICS:
        field_name = HEALTH_METRICS[metric]
        samples = [
            float(p[field_name])
            for p in metrics.get("health", ())
            if p["service"] == service and start <= p["at"] < end
        ]
        return (_stat(samples, statistic) if samples else None), len(samples)
    points = [
        p
        for p in metrics.get("datapoints", ())
        if p["service"] == service
        and start <= p["at"] < end
        and (revision is None or p.get("revision") == revision)
    ]
    if not points:
        return None, 0
    if metric in COUNT_METRICS:
        name = COUNT_METRICS[metric]
        return _stat([float(p.get(name, 0)) for p in points], statistic), len(points)
    if metric == "InflightRequests":
        return _stat([float(p.get("inflight", 0)) for p in points], statistic), len(points)
    if metric == "ErrorRate":
        requests = sum(int(p.get("requests", 0)) for p in points)
        errors = sum(int(p.get("5xx", 0)) for p in points)
        return (100.0 * errors / requests if requests else None), requests
    return _latency(points, statistic)


def _latency(points: Sequence[Mapping[str, Any]], statistic: str) -> tuple[Value, int]:
    histogram = Histogram()
    total_ms, high, low = 0.0, 0.0, math.inf
    for point in points:
        histogram.merge(Histogram.from_json(point.get("histogram")))
        latency = point.get("latency_ms") or {}
        total_ms += float(latency.get("sum") or 0.0)
        if latency.get("max") is not None:
            high = max(high, float(latency["max"]))
        if latency.get("min") is not None:
            low = min(low, float(latency["min"]))
    timed = histogram.total
    if not timed:
        return None, 0
    if statistic == "sum":
        return total_ms, timed
    if statistic == "avg":
        return total_ms / timed, timed
    if statistic == "max":
        return high, timed
    if statistic == "min":
        return (low if low != math.inf else None), timed
    return histogram.percentile(float(statistic[1:]), max_ms=high), timed


def period_values(
    alarm: AlarmDefinition,
    metrics: Mapping[str, Any],
    service: str,
    end: float,
    *,
    revision: str | None = None,
    log_counts: Mapping[int, int] | None = None,
) -> list[Value]:
    """Values of the evaluation range's periods ending at `end` (oldest first)."""
    count = alarm.evaluation_range
    return [
        window_value(
            alarm,
            metrics,
            service,
            end - (k + 1) * alarm.period,
            end - k * alarm.period,
            revision=revision,
            log_counts=log_counts,
        )
        for k in reversed(range(count))
    ]


def only_grows(alarm: AlarmDefinition) -> bool:
    """Whether a period still running can only move further past the threshold: then a breach
    seen in it already counts (a 5xx count over 10 cannot drop back), seconds earlier."""
    if alarm.metric in ("ErrorRate",):
        return False
    upward = alarm.comparison in (Comparison.GREATER, Comparison.GREATER_OR_EQUAL)
    return (alarm.statistic in ("sum", "max") and upward) or (
        alarm.statistic == "min" and not upward
    )


@dataclass(frozen=True)
class Transition:
    """One state change of an alarm, with the numbers behind it."""

    at: float
    alarm: str
    old_state: AlarmState
    new_state: AlarmState
    reason: str
    value: float | None  # the newest datapoint judged
    threshold: float
    datapoints: tuple[Value, ...]

    def to_json(self) -> dict[str, Any]:
        """The ALARM event's data."""
        return {
            "alarm": self.alarm,
            "old_state": self.old_state.value,
            "new_state": self.new_state.value,
            "reason": self.reason,
            "value": self.value,
            "threshold": self.threshold,
            "datapoints": list(self.datapoints),
        }


@dataclass
class AlarmEvaluator:
    """One alarm's state over time: evaluate it on fresh metrics, keep every transition."""

    alarm: AlarmDefinition
    clock: Clock = field(default_factory=SystemClock)
    state: AlarmState = AlarmState.INSUFFICIENT_DATA
    history: list[Transition] = field(default_factory=list)
    last_values: tuple[Value, ...] = ()

    def evaluate_values(self, values: Sequence[Value]) -> Transition | None:
        """Judge ready-made period values (oldest first); return the transition, if any."""
        verdict = decide(self.alarm, values, self.state)
        self.last_values = tuple(values)
        if verdict.state is self.state:
            return None
        newest = next((v for v in reversed(values) if v is not None), None)
        transition = Transition(
            at=self.clock.time(),
            alarm=self.alarm.name,
            old_state=self.state,
            new_state=verdict.state,
            reason=verdict.reason,
            value=newest,
            threshold=self.alarm.threshold,
            datapoints=tuple(values),
        )
        self.state = verdict.state
        self.history.append(transition)
        return transition

    def evaluate(
        self,
        metrics: Mapping[str, Any],
        service: str,
        *,
        revision: str | None = None,
        log_counts: Mapping[int, int] | None = None,
    ) -> Transition | None:
        """Judge the router's metrics (the `metrics` op's answer) for `service`."""
        period = int(metrics.get("period", PERIOD))
        current = float(metrics.get("current", self.clock.time() // period * period))
        kwargs: dict[str, Any] = {"revision": revision, "log_counts": log_counts}
        values = period_values(self.alarm, metrics, service, current, **kwargs)
        end = current
        if only_grows(self.alarm):
            running = period_values(self.alarm, metrics, service, current + period, **kwargs)
            newest = running[-1]
            if newest is not None and self.alarm.comparison.breaches(newest, self.alarm.threshold):
                values, end = running, current + period
        if self.alarm.min_samples:
            start = end - self.alarm.period
            _, samples = window_sample(self.alarm, metrics, service, start, end, **kwargs)
            if samples < self.alarm.min_samples:
                # CloudWatch's `ignore`: the state does not change during such a period.
                self.last_values = tuple(values)
                return None
        return self.evaluate_values(values)
