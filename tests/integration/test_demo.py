"""`make demo` keeps its promise: v2 deploys under load, v3 is rolled back, no request fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from zerodown.demo import run_demo
from zerodown.domain.events import DeploymentState


@pytest.mark.slow
async def test_demo_deploys_v2_under_load_and_rolls_back_v3_without_failed_requests(
    tmp_path: Path,
) -> None:
    result = await run_demo(tmp_path)
    outcomes = {tag: record.state for tag, record in result.deployments}
    assert outcomes == {
        "v1": DeploymentState.SUCCEEDED,
        "v2": DeploymentState.SUCCEEDED,
        "v3": DeploymentState.ROLLED_BACK,
    }
    v3 = dict(result.deployments)["v3"]
    assert v3.reason is not None and "health" in v3.reason
    assert result.load.sent > 100
    assert result.load.failed == 0, result.load.failures
    assert set(result.load.versions) <= {"v1", "v2"}  # v3 never answered a request
    assert result.load.versions["v2"] > 0
