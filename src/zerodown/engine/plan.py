"""Batch planning: how many instances each step of a deployment replaces."""

from __future__ import annotations

import math

from zerodown.config.model import StrategyConfig
from zerodown.errors import ConfigError


def resolve_count(value: int | str, total: int, *, round_up: bool) -> int:
    """A count ("2") or a percentage of `total` ("50%") as a number of instances.

    Percentages of a batch round down (never more than asked to change at once) and percentages
    of min_healthy round up (never fewer than asked to keep serving), as ECS does.
    """
    if isinstance(value, int):
        return value
    text = value.strip()
    if text.endswith("%"):
        share = total * int(text[:-1]) / 100
        return math.ceil(share) if round_up else math.floor(share)
    if text.isdigit():
        return int(text)
    raise ConfigError(f"write a count (2) or a percentage ('50%'), not {value!r}")


def plan_batches(total: int, batch: int | str, min_healthy: int | str, surge: bool) -> list[int]:
    """Split `total` instances into batch sizes, first to last (they add up to `total`).

    With surge, new instances start before old ones stop, so min_healthy never limits a batch.
    Without surge, a batch stops its old instances first, so at most `total - min_healthy`
    instances may be out of service at once; ConfigError when that leaves no room at all.
    """
    if total <= 0:
        return []
    size = max(1, resolve_count(batch, total, round_up=False))
    if not surge:
        keep = min(total, resolve_count(min_healthy, total, round_up=True))
        room = total - keep
        if room <= 0:
            raise ConfigError(
                f"min_healthy {min_healthy!r} keeps all {total} instance(s) serving, so none "
                "can be replaced without surge: lower strategy.min_healthy, or set "
                "strategy.surge: true",
                field="strategy.min_healthy",
            )
        size = min(size, room)
    size = min(size, total)
    full, rest = divmod(total, size)
    return [size] * full + ([rest] if rest else [])


def min_healthy_for(config: StrategyConfig) -> int | str:
    """min_healthy as given; when left at its default, it does not limit a batch.

    The default ("100%") is what surge keeps anyway. Without surge it would forbid any progress,
    so unless a user sets it, the batch size alone decides (CodeDeploy's OneAtATime semantics).
    """
    return config.min_healthy if "min_healthy" in config.model_fields_set else 0


def check_plan(config: StrategyConfig, instances: int) -> None:
    """Raise ConfigError now if the strategy's batches cannot make progress."""
    if config.type == "all-at-once":
        return
    surge = config.surge if config.type == "rolling" else False
    plan_batches(instances, config.batch, min_healthy_for(config), surge)
