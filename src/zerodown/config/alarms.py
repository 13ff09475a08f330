"""The `alarms:`, `bake_window:` and `log_metrics:` parts of zerodown.yml."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from zerodown.alarms.model import AlarmDefinition, Comparison, MissingData, check_metric
from zerodown.alarms.model import check_statistic as _check_statistic
from zerodown.alarms.presets import expand
from zerodown.config.units import Duration


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AlarmConfig(_Model):
    """A CloudWatch-style alarm on a metric the router measures (or a log metric filter)."""

    name: str = Field(description="Shown in events, notifications and `zerodown alarms`.")
    metric: str = Field(
        description="RequestCount, HTTPCode_5XX_Count, ErrorRate (%), TargetResponseTime (ms), "
        "HealthyHostCount, UnHealthyHostCount, InflightRequests, ... or log:<log metric name>."
    )
    statistic: str = Field("avg", description="avg, sum, min, max or pNN (p50, p95, p99).")
    comparison: str = Field(">", description=">, >=, <, <= (or CloudWatch's names).")
    threshold: float = Field(description="The value the statistic is compared with.")
    period: Duration = Field(60.0, description="Length of one datapoint: 10 s, 1m, 5m ...")
    evaluation_periods: int = Field(1, ge=1, le=1000, description="N: periods looked at.")
    datapoints_to_alarm: int | None = Field(
        None, ge=1, description="M: breaching periods among the N that make an ALARM (default N)."
    )
    treat_missing_data: Literal["missing", "notBreaching", "breaching", "ignore"] = Field(
        "missing", description="How a period without data counts (CloudWatch's TreatMissingData)."
    )
    rollback: bool = Field(
        True, description="ALARM during a deployment or its bake window rolls it back."
    )
    description: str = Field("", description="Free text for people.")
    evaluate_low_sample_count_percentile: Literal["evaluate", "ignore"] = Field(
        "evaluate",
        description="For pNN statistics: `ignore` keeps the state while the newest period has "
        "fewer samples than 10/(1-p) (1,000 for p99), as CloudWatch does.",
    )

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        return check_metric(value)

    @field_validator("statistic")
    @classmethod
    def _statistic(cls, value: str) -> str:
        return _check_statistic(value)

    @field_validator("comparison")
    @classmethod
    def _comparison(cls, value: str) -> str:
        return Comparison.parse(value).symbol

    @field_validator("period")
    @classmethod
    def _period(cls, value: float) -> float:
        if value < 10 or value % 10:
            raise ValueError("must be a multiple of 10 s (the router's datapoints are 10 s)")
        return value

    def to_definition(self) -> AlarmDefinition:
        """The plain value the evaluator uses."""
        return AlarmDefinition(
            name=self.name,
            metric=self.metric,
            statistic=self.statistic,
            threshold=self.threshold,
            comparison=Comparison.parse(self.comparison),
            period=int(self.period),
            evaluation_periods=self.evaluation_periods,
            datapoints_to_alarm=self.datapoints_to_alarm,
            treat_missing_data=MissingData(self.treat_missing_data),
            rollback=self.rollback,
            description=self.description,
            evaluate_low_sample_count_percentile=self.evaluate_low_sample_count_percentile,
        )


def _expand(value: Any) -> Any:
    return expand(value) if isinstance(value, list) else value


def _check_alarms(value: list[AlarmConfig]) -> list[AlarmConfig]:
    names = [alarm.name for alarm in value]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"alarm names must be unique: {', '.join(duplicates)}")
    for alarm in value:
        alarm.to_definition()  # M <= N and the rest, checked before anything starts
    return value


# `alarms: [{preset: seed}, {name: ..., metric: ...}]`: presets expand before validation.
AlarmList = Annotated[list[AlarmConfig], BeforeValidator(_expand), AfterValidator(_check_alarms)]


LOG_PRESETS: dict[str, dict[str, Any]] = {
    "error-lines": {"name": "error_lines", "pattern": r"\bERROR\b"},
    "exceptions": {"name": "exceptions", "pattern": r"Exception\b"},
    "slow-queries": {
        "name": "slow_queries",
        "pattern": r"(?:duration|took|elapsed)[=: ]+(?P<value>\d+(?:\.\d+)?)\s*ms",
        "value_field": "value",
        "threshold": 1000,
    },
}


class LogMetricConfig(_Model):
    """A log metric filter: lines of the instances' logs that match become a count."""

    preset: Literal["error-lines", "exceptions", "slow-queries"] | None = Field(
        None, description="Start from a preset (the seed's ERROR lines, Exception, slow queries)."
    )
    name: str = Field(description="The metric is log:<name>.")
    pattern: str = Field(description="A Python regular expression searched in each line.")
    value_field: str | None = Field(
        None, description="Named group holding a number; with threshold, count only above it."
    )
    threshold: float | None = Field(None, description="Count a line only if value_field > this.")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") in LOG_PRESETS:
            return {**LOG_PRESETS[data["preset"]], **data}
        return data

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value


def _unique_log_metrics(value: list[LogMetricConfig]) -> list[LogMetricConfig]:
    names = [item.name for item in value]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"log metric names must be unique: {', '.join(duplicates)}")
    return value


LogMetricList = Annotated[list[LogMetricConfig], AfterValidator(_unique_log_metrics)]
