"""Alarm definitions with CloudWatch semantics: metric, statistic, period, M of N, comparison,
threshold and missing-data treatment; states OK / ALARM / INSUFFICIENT_DATA."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum

from zerodown.metrics.series import PERIOD


class AlarmState(StrEnum):
    """The three states of an alarm."""

    OK = "OK"
    ALARM = "ALARM"
    INSUFFICIENT_DATA = "INSUFFICIENT_DATA"


class Comparison(StrEnum):
    """How a datapoint is compared with the threshold (CloudWatch's names)."""

    GREATER = "GreaterThanThreshold"
    GREATER_OR_EQUAL = "GreaterThanOrEqualToThreshold"
    LESS = "LessThanThreshold"
    LESS_OR_EQUAL = "LessThanOrEqualToThreshold"

    @property
    def symbol(self) -> str:
        """`>`, `>=`, `<` or `<=`."""
        return _SYMBOLS[self]

    def breaches(self, value: float, threshold: float) -> bool:
        """Whether `value` is on the alarming side of `threshold`."""
        if self is Comparison.GREATER:
            return value > threshold
        if self is Comparison.GREATER_OR_EQUAL:
            return value >= threshold
        if self is Comparison.LESS:
            return value < threshold
        return value <= threshold

    @classmethod
    def parse(cls, text: str) -> Comparison:
        """From a symbol (`>`) or a CloudWatch name (`GreaterThanThreshold`)."""
        for member, symbol in _SYMBOLS.items():
            if text in (symbol, member.value):
                return member
        raise ValueError(f"comparison {text!r}: use >, >=, <, <= (or CloudWatch's names)")


_SYMBOLS = {
    Comparison.GREATER: ">",
    Comparison.GREATER_OR_EQUAL: ">=",
    Comparison.LESS: "<",
    Comparison.LESS_OR_EQUAL: "<=",
}


class MissingData(StrEnum):
    """How missing datapoints are treated (CloudWatch's `TreatMissingData`)."""

    MISSING = "missing"
    NOT_BREACHING = "notBreaching"
    BREACHING = "breaching"
    IGNORE = "ignore"


# Metrics the router measures, by CloudWatch-like name. `log:<filter>` names a log metric filter.
COUNT_METRICS = {
    "RequestCount": "requests",
    "HTTPCode_2XX_Count": "2xx",
    "HTTPCode_3XX_Count": "3xx",
    "HTTPCode_4XX_Count": "4xx",
    "HTTPCode_5XX_Count": "5xx",
    "HTTPCode_Target_5XX_Count": "5xx",
    "UpstreamErrorCount": "upstream_errors",
}
HEALTH_METRICS = {
    "HealthyHostCount": "healthy",
    "UnHealthyHostCount": "unhealthy",
    "ZeroHealthySeconds": "zero_healthy_seconds",
}
OTHER_METRICS = ("TargetResponseTime", "ErrorRate", "InflightRequests")
METRICS = (*COUNT_METRICS, *HEALTH_METRICS, *OTHER_METRICS)
LOG_PREFIX = "log:"
_STATISTIC = re.compile(r"^(avg|sum|min|max|p(\d{1,2}(?:\.\d+)?))$")


def check_metric(name: str) -> str:
    """`name` if it is a metric zerodown measures, else ValueError listing them."""
    if name in METRICS or (name.startswith(LOG_PREFIX) and len(name) > len(LOG_PREFIX)):
        return name
    raise ValueError(f"unknown metric {name!r}: use one of {', '.join(METRICS)} or log:<filter>")


def check_statistic(text: str) -> str:
    """`text` if it is avg, sum, min, max or pNN (p50, p95, p99.9), else ValueError."""
    text = text.strip().lower()
    aliases = {"average": "avg", "sum": "sum", "minimum": "min", "maximum": "max"}
    text = aliases.get(text, text)
    match = _STATISTIC.match(text)
    if not match or (match.group(2) is not None and not 0 < float(match.group(2)) < 100):
        raise ValueError(f"statistic {text!r}: use avg, sum, min, max or pNN (p50, p95, p99)")
    return text


@dataclass(frozen=True)
class AlarmDefinition:
    """One alarm: when is a period's value breaching, and how many periods make an ALARM."""

    name: str
    metric: str
    statistic: str  # avg | sum | min | max | pNN
    threshold: float
    comparison: Comparison = Comparison.GREATER
    period: int = PERIOD  # seconds, a multiple of the router's 10 s datapoints
    evaluation_periods: int = 1  # N
    datapoints_to_alarm: int | None = None  # M (default N)
    treat_missing_data: MissingData = MissingData.MISSING
    rollback: bool = True  # ALARM fails the deployment (when the environment has auto_rollback)
    description: str = ""
    # CloudWatch's EvaluateLowSampleCountPercentile: `ignore` keeps the state while a percentile's
    # newest period has too few samples to mean anything (see `min_samples`).
    evaluate_low_sample_count_percentile: str = "evaluate"

    def __post_init__(self) -> None:
        check_metric(self.metric)
        object.__setattr__(self, "statistic", check_statistic(self.statistic))
        if self.period < PERIOD or self.period % PERIOD:
            raise ValueError(f"alarm {self.name}: period must be a multiple of {PERIOD} s")
        if self.evaluate_low_sample_count_percentile not in ("evaluate", "ignore"):
            raise ValueError(
                f"alarm {self.name}: evaluate_low_sample_count_percentile: use evaluate or ignore"
            )
        if self.evaluation_periods < 1:
            raise ValueError(f"alarm {self.name}: evaluation_periods must be at least 1")
        if not 1 <= self.m <= self.evaluation_periods:
            raise ValueError(
                f"alarm {self.name}: datapoints_to_alarm must be between 1 and "
                f"evaluation_periods ({self.evaluation_periods})"
            )

    @property
    def m(self) -> int:
        """Datapoints to alarm."""
        return self.datapoints_to_alarm or self.evaluation_periods

    @property
    def min_samples(self) -> int:
        """Samples a period needs before a percentile counts when low counts are ignored:
        CloudWatch's 10 / (1 - p) for p >= 0.5 (1,000 for p99), 10 / p below; 0 otherwise."""
        if self.evaluate_low_sample_count_percentile != "ignore" or self.statistic[0] != "p":
            return 0
        p = float(self.statistic[1:]) / 100
        return math.ceil((10 / (1 - p) if p >= 0.5 else 10 / p) - 1e-6)  # 1000.0000000000009

    @property
    def evaluation_range(self) -> int:
        """How many recent periods are looked at to find N real datapoints (CloudWatch: N + 2
        for its documented N = 3 examples)."""
        return self.evaluation_periods + 2

    def describe(self) -> str:
        """`HTTPCode_5XX_Count sum > 10 for 1 of 1 x 300 s`."""
        return (
            f"{self.metric} {self.statistic} {self.comparison.symbol} {self.threshold:g} "
            f"for {self.m} of {self.evaluation_periods} x {self.period} s"
        )
