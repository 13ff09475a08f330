"""plan_batches: batch sizes from counts and percentages, min_healthy, surge."""

from __future__ import annotations

import pytest

from zerodown.engine.plan import plan_batches
from zerodown.errors import ConfigError


@pytest.mark.parametrize(
    ("total", "batch", "min_healthy", "surge", "expected"),
    [
        (4, 1, "100%", True, [1, 1, 1, 1]),  # the seeds' OneAtATime, with surge
        (4, 2, "100%", True, [2, 2]),
        (5, 2, "100%", True, [2, 2, 1]),  # the last batch takes the rest
        (4, "50%", "100%", True, [2, 2]),
        (3, "50%", "100%", True, [1, 1, 1]),  # a batch percentage rounds down...
        (1, "10%", "100%", True, [1]),  # ...but never below one
        (2, 0, "100%", True, [1, 1]),
        (3, 10, "100%", True, [3]),  # never more than the fleet
        (4, 4, "75%", False, [1, 1, 1, 1]),  # without surge min_healthy caps the batch
        (4, 4, 2, False, [2, 2]),
        (3, 2, "50%", False, [1, 1, 1]),  # min_healthy percentage rounds up: keep 2 of 3
        (4, "100%", 0, False, [4]),
        (0, 1, "100%", True, []),
    ],
)
def test_plan_batches_table(
    total: int, batch: int | str, min_healthy: int | str, surge: bool, expected: list[int]
) -> None:
    """Each row: the batches add up to the fleet and follow batch, min_healthy and surge."""
    assert plan_batches(total, batch, min_healthy, surge) == expected
    assert sum(expected) == total


@pytest.mark.parametrize(("total", "min_healthy"), [(2, "100%"), (1, 1), (3, 5)])
def test_min_healthy_that_blocks_progress_without_surge_is_a_config_error(
    total: int, min_healthy: int | str
) -> None:
    """Without surge, keeping every instance serving leaves nothing to replace: say what to do."""
    with pytest.raises(ConfigError) as caught:
        plan_batches(total, 1, min_healthy, False)
    assert "surge" in str(caught.value)
    assert caught.value.field == "strategy.min_healthy"
