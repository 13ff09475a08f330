"""Canary analysis verdicts from fake numbers: pass, fail on errors or latency, inconclusive."""

from __future__ import annotations

from zerodown.config.progressive import AnalysisConfig
from zerodown.engine.analysis import RevisionStats, Verdict, judge

CONFIG = AnalysisConfig(max_error_rate=0.05, max_p95_ratio=2.0, min_requests=50, min_p95_ms=20)


def test_a_canary_like_its_baseline_passes_with_the_numbers() -> None:
    """Same error rate and latency as the baseline, enough requests: pass, numbers in the data."""
    result = judge(RevisionStats("new", 100, 1, 40.0), RevisionStats("old", 900, 9, 38.0), CONFIG)
    assert result.verdict is Verdict.PASS
    data = result.to_data()
    assert data["canary"]["requests"] == 100 and data["baseline"]["p95_ms"] == 38.0
    assert [c["ok"] for c in data["checks"]] == [True, True]


def test_twenty_percent_5xx_fails_on_error_rate() -> None:
    """20 % 5xx against a clean baseline fails, and the reason quotes the rate and the limit."""
    result = judge(RevisionStats("new", 100, 20, 40.0), RevisionStats("old", 900, 0, 40.0), CONFIG)
    assert result.verdict is Verdict.FAIL
    assert "20/100 = 20.0 %" in result.reason and "limit 5.0 %" in result.reason


def test_errors_fail_before_min_requests_once_failure_is_certain() -> None:
    """10 errors in 12 requests exceed 5 % of the 50 needed: fail now, not inconclusive."""
    result = judge(RevisionStats("new", 12, 10, 40.0), RevisionStats("old", 900, 0, 40.0), CONFIG)
    assert result.verdict is Verdict.FAIL


def test_p95_three_times_the_baseline_fails_on_latency() -> None:
    """p95 300 ms vs 100 ms (x3 > x2): fail naming the ratio."""
    result = judge(RevisionStats("new", 80, 0, 300.0), RevisionStats("old", 800, 0, 100.0), CONFIG)
    assert result.verdict is Verdict.FAIL
    assert "x3.00" in result.reason


def test_p95_below_the_noise_floor_never_fails() -> None:
    """5 ms vs 1 ms is x5 but under min_p95_ms: not a failure."""
    result = judge(RevisionStats("new", 80, 0, 5.0), RevisionStats("old", 800, 0, 1.0), CONFIG)
    assert result.verdict is Verdict.PASS


def test_too_little_traffic_is_inconclusive_and_says_what_is_missing() -> None:
    """12 clean requests: inconclusive, "served 12 of the 50 requests needed"."""
    result = judge(RevisionStats("new", 12, 0, 40.0), RevisionStats("old", 300, 0, 40.0), CONFIG)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.missing == ("the canary served 12 of the 50 requests needed",)


def test_no_latency_histogram_is_inconclusive_not_a_pass() -> None:
    """Enough requests but no p95 for the baseline: inconclusive (never NaN, never a pass)."""
    result = judge(RevisionStats("new", 80, 0, 40.0), RevisionStats("old", 800, 0, None), CONFIG)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert "latency histogram" in result.missing[0]


def test_a_noisy_baseline_raises_the_error_limit() -> None:
    """Baseline at 8 % 5xx: a canary at 8.5 % is within baseline + 1 point, so it passes."""
    result = judge(
        RevisionStats("new", 200, 17, 40.0), RevisionStats("old", 1000, 80, 40.0), CONFIG
    )
    assert result.verdict is Verdict.PASS
