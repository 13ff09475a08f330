"""AlarmGuard with a fake router (the metrics seam) and a FakeClock: a breach fails the
deployment with the alarm named; with auto_rollback off it is only recorded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from zerodown.alarms.guard import AlarmGuard
from zerodown.clock import FakeClock
from zerodown.config.model import EnvironmentConfig, ServiceConfig
from zerodown.domain.events import DeploymentState, EventKind
from zerodown.domain.records import DeploymentRecord
from zerodown.engine.extensions import DeploymentContext
from zerodown.errors import AlarmTriggered

ALARM = {
    "name": "api-5xx",
    "metric": "HTTPCode_5XX_Count",
    "statistic": "sum",
    "threshold": 10,
    "period": "10s",
    "treat_missing_data": "notBreaching",
}


class FakeRouter:
    """Answers `metrics` with whatever the test put in `errors` for revision r2."""

    name = "fake"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.errors = 0

    async def metrics(self, since: float | None = None) -> dict[str, Any]:
        current = int(self.clock.time() // 10 * 10)
        point = {"at": current, "service": "api.prod", "revision": "r2", "requests": 100}
        return {"period": 10, "current": current, "datapoints": [{**point, "5xx": self.errors}]}


def _context(router: FakeRouter, events: list[tuple[EventKind, str, Any]], rollback: bool) -> Any:
    async def emit(kind: EventKind, message: str, data: dict[str, Any] | None) -> None:
        events.append((kind, message, data))

    record = DeploymentRecord(
        "d1", "api", "prod", "r2", "rolling", DeploymentState.IN_PROGRESS, "test", 0.0
    )
    return DeploymentContext(
        record=record,
        service=ServiceConfig(run="app"),
        environment=EnvironmentConfig(alarms=[ALARM], auto_rollback=rollback),
        route="api.prod",
        runtime=None,  # type: ignore[arg-type]  # not used without log metrics
        router=router,  # type: ignore[arg-type]
        emit=emit,
    )


async def test_breach_raises_alarm_triggered_naming_the_alarm_and_records_the_event() -> None:
    clock = FakeClock()
    router = FakeRouter(clock)
    events: list[tuple[EventKind, str, Any]] = []
    watch = asyncio.ensure_future(AlarmGuard(clock=clock).watch(_context(router, events, True)))
    await clock.advance(3)
    assert not watch.done()
    router.errors = 25
    await clock.advance(1)
    with pytest.raises(AlarmTriggered, match="api-5xx") as caught:
        await watch
    assert caught.value.value == 25
    alarm_events = [data for kind, _, data in events if kind is EventKind.ALARM]
    assert alarm_events[-1]["new_state"] == "ALARM" and alarm_events[-1]["value"] == 25


async def test_without_auto_rollback_the_alarm_is_recorded_and_the_deployment_goes_on() -> None:
    clock = FakeClock()
    router = FakeRouter(clock)
    router.errors = 25
    events: list[tuple[EventKind, str, Any]] = []
    watch = asyncio.ensure_future(AlarmGuard(clock=clock).watch(_context(router, events, False)))
    await clock.advance(3)
    assert not watch.done()
    watch.cancel()
    assert any(kind is EventKind.ALARM for kind, _, _ in events)
    assert any("auto_rollback is off" in message for _, message, _ in events)


async def test_a_router_that_measures_nothing_says_so_and_watches_nothing() -> None:
    """Without the router's measurements the guard returns at once with one decision naming
    the router, instead of judging alarms on no data."""

    class BlindRouter:
        name = "blind"

    events: list[tuple[EventKind, str, Any]] = []
    ctx = _context(BlindRouter(), events, True)  # type: ignore[arg-type]  # a router, no metrics
    await asyncio.wait_for(AlarmGuard(clock=FakeClock()).watch(ctx), 5.0)
    assert events == [
        (EventKind.DECISION, "alarms not evaluated: the blind router measures nothing", None)
    ]
