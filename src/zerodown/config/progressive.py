"""Settings of the progressive strategies (blue-green, canary): steps, analysis, rollback window.

`StrategyConfig` in `zerodown.config.model` hangs these on `strategy:`; they live here so the
strategy model stays short.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from zerodown.config.units import Duration


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CanaryStep(_Model):
    """One canary step: the new revision's share of traffic, then how long to hold it."""

    weight: int = Field(ge=0, le=100, description="Percent of traffic on the new revision.")
    pause: Duration | None = Field(
        None, description="Hold this long (with analysis); none: wait for `zerodown promote`."
    )


class AnalysisConfig(_Model):
    """How a canary is judged against its baseline at every step."""

    max_error_rate: float = Field(
        0.05, ge=0, le=1, description="Highest 5xx share of the canary's requests (0.05 = 5 %)."
    )
    max_error_rate_increase: float = Field(
        0.01, ge=0, le=1, description="Canary error rate may exceed the baseline's by this much."
    )
    max_p95_ratio: float = Field(
        2.0, gt=0, description="Canary p95 latency may be at most this many times the baseline's."
    )
    min_p95_ms: float = Field(
        50.0, ge=0, description="p95 latency below this is never a failure (noise floor)."
    )
    min_requests: int = Field(
        50, ge=1, description="Requests the canary must have served for a verdict."
    )
    interval: Duration = Field(5.0, gt=0, description="Time between analyses within a step.")
    inconclusive_limit: Duration = Field(
        300.0, description="How long too little traffic may hold a step before `on_inconclusive`."
    )
    on_inconclusive: Literal["fail", "pass"] = Field(
        "fail", description="What a step still inconclusive at the limit becomes."
    )


def default_steps() -> tuple[CanaryStep, ...]:
    """10 % for a minute, 50 % for a minute, then everything."""
    return (CanaryStep(weight=10, pause=60.0), CanaryStep(weight=50, pause=60.0))


def check_steps(steps: tuple[CanaryStep, ...]) -> None:
    """Raise ValueError unless step weights are strictly increasing."""
    weights = [s.weight for s in steps]
    if any(b <= a for a, b in pairwise(weights)):
        raise ValueError(f"canary step weights must grow from step to step, got {weights}")
