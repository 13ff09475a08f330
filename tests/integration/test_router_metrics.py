"""The router daemon measures traffic: a real router, real example-app instances (one revision
answering 5xx on 20 % of requests), real HTTP load, and the `metrics` op read back."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from zerodown.metrics.prometheus import render_prometheus
from zerodown.metrics.series import aggregate
from zerodown.routers.base import RouteSpec, TargetSpec

from router_fixtures import Fleet, fleet  # isort: skip - sibling module

__all__ = ["fleet"]  # the fixture is used by name

pytestmark = pytest.mark.timeout(60)


async def _send(url: str, count: int) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(count):
            await client.get(url)


async def test_metrics_op_reports_about_20_percent_5xx_for_the_bad_revision(fleet: Fleet) -> None:
    address = await fleet.start_router()
    good = await fleet.webapp("good")
    bad = await fleet.webapp("bad", ERROR_RATE="0.2")
    router = fleet.router
    await router.apply_route(RouteSpec(service="api.prod", balance="round_robin"))
    await router.add_target(
        TargetSpec("api.prod", "good", "127.0.0.1", good.port, "r1"), healthy=True
    )
    await router.add_target(
        TargetSpec("api.prod", "bad", "127.0.0.1", bad.port, "r2"), healthy=True
    )

    await asyncio.gather(*(_send(f"http://{address}/", 100) for _ in range(8)))  # 800 requests

    metrics = await router.metrics()
    assert metrics["period"] == 10
    by_revision = {g.key["revision"]: g for g in aggregate(metrics["datapoints"])}
    assert by_revision["r1"].requests + by_revision["r2"].requests == 800
    assert by_revision["r1"].errors_5xx == 0
    assert 0.12 < by_revision["r2"].error_rate < 0.28  # 20 % of ~400 requests, binomial spread
    assert by_revision["r2"].p50 is not None and by_revision["r2"].p99 is not None
    assert by_revision["r2"].p50 <= by_revision["r2"].p99
    health = [p for p in metrics["health"] if p["service"] == "api.prod"]
    # `healthy` is the period's minimum (the route started empty); `serving` is now.
    assert health and health[-1]["serving"] == 2 and health[-1]["unhealthy"] == 0


async def test_prometheus_text_of_live_metrics_parses(fleet: Fleet) -> None:
    address = await fleet.start_router()
    app = await fleet.webapp("one", ERROR_RATE="0.2")
    await fleet.router.apply_route(RouteSpec(service="web"))
    await fleet.router.add_target(app.target(), healthy=True)
    await _send(f"http://{address}/", 50)

    text = render_prometheus(await fleet.router.metrics()).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (requests,) = families["zerodown_requests"].samples
    assert requests.value == 50 and requests.labels["target"] == "one"
    classes = {s.labels["code_class"]: s.value for s in families["zerodown_responses"].samples}
    assert classes["2xx"] + classes["5xx"] == 50 and classes["5xx"] > 0
    buckets = [
        s
        for s in families["zerodown_request_duration_seconds"].samples
        if s.name.endswith("_bucket")
    ]
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 50
    assert families["zerodown_healthy_targets"].samples[0].value == 1
