"""`zerodown metrics` reads the control plane's `MetricsSource`: the router's report when it
measures, one known error naming the router when it does not."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from zerodown.cli import metrics as metrics_cli
from zerodown.errors import ConfigError
from zerodown.metrics.source import metrics_source


class MeasuringRouter:
    name = "fake"

    async def metrics(self, since: float | None = None) -> dict[str, Any]:
        return {"period": 10, "since": since, "datapoints": []}


class BlindRouter:
    name = "blind"


async def test_the_report_comes_from_the_planes_metrics_source() -> None:
    plane = SimpleNamespace(metrics=metrics_source(MeasuringRouter()))  # type: ignore[arg-type]
    report = await metrics_cli._measured_report(plane, 12.0)  # type: ignore[arg-type]
    assert report == {"period": 10, "since": 12.0, "datapoints": []}


async def test_a_router_that_measures_nothing_is_a_known_error_naming_it() -> None:
    plane = SimpleNamespace(metrics=metrics_source(BlindRouter()))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="the blind router does not measure traffic"):
        await metrics_cli._measured_report(plane, None)  # type: ignore[arg-type]
