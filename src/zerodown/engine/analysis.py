"""Canary analysis: the new revision against its baseline, from a `MetricsSource`'s numbers
(`zerodown.metrics.source`: today the router's own measurements).

A verdict is `pass`, `fail` or `inconclusive`, always with the numbers it was made from and,
when inconclusive, what is missing ("the canary served 12 of the 50 requests needed"). Too little
traffic is never read as a pass or a fail; the strategy holds the step and asks again, up to
`analysis.inconclusive_limit`. Errors are judged as soon as they are certain: once the canary's
5xx count alone exceeds what `min_requests` could absorb, waiting for more traffic cannot save it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from zerodown.config.progressive import AnalysisConfig
from zerodown.metrics.source import RevisionStats

__all__ = ["AnalysisResult", "Check", "RevisionStats", "Verdict", "judge"]


class Verdict(StrEnum):
    """What one analysis concluded."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Check:
    """One comparison the analysis made."""

    name: str  # error_rate | p95_latency
    ok: bool | None  # None: not enough data to decide
    detail: str


@dataclass(frozen=True)
class AnalysisResult:
    """A verdict, its reason, and everything it was made from."""

    verdict: Verdict
    reason: str
    canary: RevisionStats
    baseline: RevisionStats | None
    checks: tuple[Check, ...] = ()
    missing: tuple[str, ...] = field(default_factory=tuple)

    def to_data(self) -> dict[str, Any]:
        """JSON-ready, for the ANALYSIS event."""
        return {
            "verdict": self.verdict.value,
            "reason": self.reason,
            "canary": {**asdict(self.canary), "error_rate": round(self.canary.error_rate, 4)},
            "baseline": (
                {**asdict(self.baseline), "error_rate": round(self.baseline.error_rate, 4)}
                if self.baseline
                else None
            ),
            "checks": [asdict(c) for c in self.checks],
            "missing": list(self.missing),
        }


def _pct(rate: float) -> str:
    return f"{rate * 100:.1f} %"


def _check_errors(
    canary: RevisionStats, baseline: RevisionStats | None, config: AnalysisConfig
) -> Check:
    limit = config.max_error_rate
    if baseline is not None and baseline.requests:
        limit = max(limit, baseline.error_rate + config.max_error_rate_increase)
    # Certain failure: even if every request still needed for a verdict succeeded, the rate
    # would stay above the limit.
    certain = canary.errors_5xx / max(canary.requests, config.min_requests)
    rate = canary.error_rate
    described = (
        f"canary 5xx {canary.errors_5xx}/{canary.requests} = {_pct(rate)}, limit {_pct(limit)}"
        + (f" (baseline {_pct(baseline.error_rate)})" if baseline and baseline.requests else "")
    )
    if certain > limit:
        return Check("error_rate", False, described)
    if canary.requests < config.min_requests:
        return Check("error_rate", None, described)
    return Check("error_rate", rate <= limit, described)


def _check_latency(
    canary: RevisionStats, baseline: RevisionStats | None, config: AnalysisConfig
) -> Check:
    if baseline is None:
        return Check("p95_latency", True, "no baseline runs: latency not compared")
    if canary.requests < config.min_requests or baseline.requests < config.min_requests:
        return Check("p95_latency", None, "not enough requests to compare p95 latency")
    if canary.p95_ms is None or baseline.p95_ms is None:
        return Check("p95_latency", None, "the router has no latency histogram for a revision")
    limit = max(baseline.p95_ms * config.max_p95_ratio, config.min_p95_ms)
    ratio = canary.p95_ms / baseline.p95_ms if baseline.p95_ms > 0 else float("inf")
    detail = (
        f"canary p95 {canary.p95_ms:.0f} ms vs baseline {baseline.p95_ms:.0f} ms "
        f"(x{ratio:.2f}; limit {limit:.0f} ms = x{config.max_p95_ratio:g}, "
        f"floor {config.min_p95_ms:.0f} ms)"
    )
    return Check("p95_latency", canary.p95_ms <= limit, detail)


def judge(
    canary: RevisionStats, baseline: RevisionStats | None, config: AnalysisConfig
) -> AnalysisResult:
    """Compare the canary with its baseline under `config`; see the module docstring."""
    checks = (_check_errors(canary, baseline, config), _check_latency(canary, baseline, config))
    missing: list[str] = []
    if canary.requests < config.min_requests:
        missing.append(
            f"the canary served {canary.requests} of the {config.min_requests} requests needed"
        )
    if baseline is not None and baseline.requests < config.min_requests:
        missing.append(
            f"the baseline served {baseline.requests} of the {config.min_requests} requests needed"
        )
    if not missing and any(c.ok is None for c in checks):
        missing.extend(c.detail for c in checks if c.ok is None)
    failed = [c for c in checks if c.ok is False]
    if failed:
        verdict = Verdict.FAIL
        reason = "canary analysis failed: " + "; ".join(c.detail for c in failed)
    elif missing:
        verdict = Verdict.INCONCLUSIVE
        reason = "canary analysis inconclusive: " + "; ".join(missing)
    else:
        verdict = Verdict.PASS
        reason = "canary analysis passed: " + "; ".join(c.detail for c in checks)
    return AnalysisResult(verdict, reason, canary, baseline, checks, tuple(missing))
