"""Alarm evaluation against CloudWatch's documented examples.

Source: Amazon CloudWatch User Guide, "Using Amazon CloudWatch alarms" -> "How alarm state is
evaluated when data is missing" (AlarmThatSendsEmail.md): two tables with Evaluation Periods 3 and
an evaluation range of 5 datapoints, first with Datapoints to Alarm 3 (3 of 3), then 2 (2 of 3).
Datapoints are written oldest first: `0` not breaching, `X` breaching, `-` missing. "keep" is the
doc's "Retain current state". Time comes from a FakeClock, so transitions carry its timestamps.
"""

from __future__ import annotations

import pytest

from zerodown.alarms.evaluate import AlarmEvaluator, decide, only_grows, period_values
from zerodown.alarms.model import AlarmDefinition, AlarmState, Comparison, MissingData
from zerodown.clock import FakeClock
from zerodown.metrics.series import bucket_index

TREATMENTS = ("missing", "ignore", "breaching", "notBreaching")

THREE_OF_THREE = [
    ("0 - X - X", "OK OK OK OK"),
    ("0 - - - -", "OK OK OK OK"),
    ("- - - - -", "INSUFFICIENT_DATA keep ALARM OK"),
    ("0 X X - X", "ALARM ALARM ALARM ALARM"),
    ("- - X - -", "ALARM keep ALARM OK"),
]
TWO_OF_THREE = [
    ("0 - X - X", "ALARM ALARM ALARM ALARM"),
    ("0 0 X 0 X", "ALARM ALARM ALARM ALARM"),
    ("0 - X - -", "OK OK ALARM OK"),
    ("- - - - 0", "OK OK ALARM OK"),
    ("- - - X -", "ALARM keep ALARM OK"),
]


def alarm(m: int, treat: str = "missing", n: int = 3) -> AlarmDefinition:
    """A count alarm `> 0.5`: datapoint 1.0 breaches, 0.0 does not."""
    return AlarmDefinition(
        "test",
        "HTTPCode_5XX_Count",
        "sum",
        0.5,
        evaluation_periods=n,
        datapoints_to_alarm=m,
        treat_missing_data=MissingData(treat),
    )


def values(row: str) -> list[float | None]:
    return [None if c == "-" else (1.0 if c == "X" else 0.0) for c in row.split()]


def outcome(definition: AlarmDefinition, row: str) -> str:
    """The state from OK and from ALARM; "keep" when each stays where it was."""
    from_ok = decide(definition, values(row), AlarmState.OK).state
    from_alarm = decide(definition, values(row), AlarmState.ALARM).state
    return "keep" if from_ok != from_alarm else from_ok.value


@pytest.mark.parametrize(("row", "expected"), THREE_OF_THREE)
def test_three_of_three_matches_the_cloudwatch_table_under_every_treatment(
    row: str, expected: str
) -> None:
    got = [outcome(alarm(3, treat), row) for treat in TREATMENTS]
    assert got == expected.split()


@pytest.mark.parametrize(("row", "expected"), TWO_OF_THREE)
def test_two_of_three_matches_the_cloudwatch_table_under_every_treatment(
    row: str, expected: str
) -> None:
    got = [outcome(alarm(2, treat), row) for treat in TREATMENTS]
    assert got == expected.split()


@pytest.mark.parametrize("row", ["- - - - X", "- - - X -"])
def test_a_fresh_breach_after_missing_data_is_not_a_premature_alarm(row: str) -> None:
    """The doc's "Avoiding premature transitions": with M = 3 these stay OK under `missing`."""
    assert decide(alarm(3), values(row), AlarmState.OK).state is AlarmState.OK


async def test_evaluator_records_transitions_at_the_injected_clock_time() -> None:
    clock = FakeClock(unix_start=1_800_000_000.0)
    evaluator = AlarmEvaluator(alarm(2), clock)
    assert evaluator.state is AlarmState.INSUFFICIENT_DATA
    first = evaluator.evaluate_values(values("0 0 0 0 0"))
    await clock.advance(10)
    assert evaluator.evaluate_values(values("0 0 0 0 X")) is None  # 1 of 3: still OK
    await clock.advance(10)
    second = evaluator.evaluate_values(values("0 0 0 X X"))
    assert first is not None and second is not None
    assert (first.old_state, first.new_state) == (AlarmState.INSUFFICIENT_DATA, AlarmState.OK)
    assert (second.old_state, second.new_state) == (AlarmState.OK, AlarmState.ALARM)
    assert second.at == 1_800_000_020.0
    assert second.value == 1.0 and second.threshold == 0.5
    assert "2 of the datapoints" in second.reason
    assert [t.new_state for t in evaluator.history] == [AlarmState.OK, AlarmState.ALARM]


def _metrics(points: list[dict[str, object]], current: int) -> dict[str, object]:
    return {"period": 10, "current": current, "datapoints": points, "health": []}


def _point(at: int, requests: int, errors: int) -> dict[str, object]:
    return {
        "at": at,
        "service": "api.prod",
        "revision": "r2",
        "target": "i1",
        "requests": requests,
        "5xx": errors,
        "latency_ms": {"sum": 10.0 * requests, "max": 10.0, "min": 10.0},
        "histogram": {"24": requests},
    }


def test_period_values_sum_10s_datapoints_into_alarm_periods_and_mark_gaps_missing() -> None:
    definition = AlarmDefinition("5xx", "HTTPCode_5XX_Count", "sum", 10, period=20)
    points = [_point(1000, 10, 1), _point(1010, 10, 2), _point(1040, 10, 5)]
    # Range = N + 2 = 3 periods of 20 s ending at 1060: [1000,1020) [1020,1040) [1040,1060).
    got = period_values(definition, _metrics(points, 1060), "api.prod", 1060)
    assert got == [3.0, None, 5.0]


def test_error_rate_is_a_percentage_of_requests() -> None:
    definition = AlarmDefinition("rate", "ErrorRate", "avg", 5)
    got = period_values(definition, _metrics([_point(1000, 50, 10)], 1010), "api.prod", 1010)
    assert got[-1] == 20.0


def test_a_running_period_counts_early_only_when_it_can_only_grow_past_the_threshold() -> None:
    count = AlarmDefinition("5xx", "HTTPCode_5XX_Count", "sum", 10, comparison=Comparison.GREATER)
    rate = AlarmDefinition("rate", "ErrorRate", "avg", 5)
    assert only_grows(count) and not only_grows(rate)
    evaluator = AlarmEvaluator(count, FakeClock())
    # The period starting at 1010 is still running (current = 1010) and already has 12 errors.
    metrics = _metrics([_point(1000, 10, 0), _point(1010, 40, 12)], 1010)
    transition = evaluator.evaluate(metrics, "api.prod")
    assert transition is not None and transition.new_state is AlarmState.ALARM
    assert transition.value == 12.0


def test_definition_refuses_m_greater_than_n_and_unknown_metrics() -> None:
    with pytest.raises(ValueError, match="datapoints_to_alarm"):
        AlarmDefinition("x", "RequestCount", "sum", 1, evaluation_periods=2, datapoints_to_alarm=3)
    with pytest.raises(ValueError, match="unknown metric"):
        AlarmDefinition("x", "CPUUtilization", "avg", 1)
    with pytest.raises(ValueError, match="multiple of 10"):
        AlarmDefinition("x", "RequestCount", "sum", 1, period=15)


def _latency_point(at: int, requests: int, ms: float) -> dict[str, object]:
    return {
        **_point(at, requests, 0),
        "latency_ms": {"sum": ms * requests, "max": ms, "min": ms},
        "histogram": {str(bucket_index(ms)): requests},
    }


@pytest.mark.parametrize("treatment", ["evaluate", "ignore"])
def test_a_p95_period_with_too_few_samples_is_judged_or_ignored_as_configured(
    treatment: str,
) -> None:
    """p95 needs 10 / (1 - 0.95) = 200 samples: 50 slow requests alarm only under `evaluate`."""
    definition = AlarmDefinition(
        "p95",
        "TargetResponseTime",
        "p95",
        2000,
        evaluate_low_sample_count_percentile=treatment,
    )
    assert definition.min_samples == (200 if treatment == "ignore" else 0)
    evaluator = AlarmEvaluator(definition, FakeClock())
    fast = evaluator.evaluate(_metrics([_latency_point(1000, 300, 10.0)], 1010), "api.prod")
    assert fast is not None and fast.new_state is AlarmState.OK
    few_slow = [_latency_point(1000, 300, 10.0), _latency_point(1010, 50, 3000.0)]
    transition = evaluator.evaluate(_metrics(few_slow, 1020), "api.prod")
    if treatment == "ignore":
        assert transition is None and evaluator.state is AlarmState.OK
    else:
        assert transition is not None and transition.new_state is AlarmState.ALARM
    many_slow = [*few_slow, _latency_point(1020, 250, 3000.0)]
    evaluator.evaluate(_metrics(many_slow, 1030), "api.prod")
    assert evaluator.state is AlarmState.ALARM  # with enough samples both judge the breach


def test_low_sample_thresholds_follow_cloudwatch() -> None:
    """10 / (1 - p) from p50 up (1,000 for p99), 10 / p below; only percentiles, only `ignore`."""

    def minimum(statistic: str) -> int:
        return AlarmDefinition(
            "a", "TargetResponseTime", statistic, 1, evaluate_low_sample_count_percentile="ignore"
        ).min_samples

    assert [minimum(s) for s in ("p99", "p95", "p90", "p50", "p10", "avg")] == [
        1000, 200, 100, 20, 100, 0,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="evaluate_low_sample_count_percentile"):
        AlarmDefinition("a", "RequestCount", "p99", 1, evaluate_low_sample_count_percentile="no")
