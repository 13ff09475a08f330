"""Health timing logic (thresholds, start period, deadline, exits) with a FakeClock and a script."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import pytest

from zerodown.clock import FakeClock
from zerodown.errors import HealthCheckFailed
from zerodown.health import HealthCheckSpec, HealthMonitor, HealthReport, ProbeResult
from zerodown.health.monitor import wait_until_healthy
from zerodown.routers.base import TargetHealth

H, U, X = TargetHealth.HEALTHY, TargetHealth.UNHEALTHY, TargetHealth.UNKNOWN


@dataclass(frozen=True)
class Step:
    """One scripted probe: its outcome, how long it takes on the fake clock, its detail."""

    ok: bool
    seconds: float = 0.0
    detail: str = ""


def passing(seconds: float = 0.0) -> Step:
    return Step(True, seconds, "HTTP 200")


def failing(detail: str = "HTTP 503", seconds: float = 0.0) -> Step:
    return Step(False, seconds, detail)


class ScriptedProber:
    """A prober that plays a script on the fake clock and records when each probe ran."""

    def __init__(self, clock: FakeClock, script: list[Step], then: Step | None = None) -> None:
        self.clock = clock
        self.script = list(script)
        self.then = then or failing("connection refused")
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.inflight = 0
        self.max_inflight = 0
        self.cancelled = 0

    async def __call__(self, spec: HealthCheckSpec, host: str, port: int) -> ProbeResult:
        step = self.script.pop(0) if self.script else self.then
        at = self.clock.time()
        self.starts.append(self.clock.monotonic())
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            await self.clock.sleep(step.seconds)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.inflight -= 1
        self.ends.append(self.clock.monotonic())
        code = int(step.detail.split()[1]) if step.detail.startswith("HTTP ") else None
        return ProbeResult(step.ok, step.detail, step.seconds, at, status_code=code)


def spec(**changes: Any) -> HealthCheckSpec:
    values: dict[str, Any] = {
        "interval": 1.0,
        "timeout": 0.5,
        "healthy_threshold": 2,
        "unhealthy_threshold": 3,
        "start_period": 0.0,
        "deadline": 60.0,
    }
    values.update(changes)
    values.setdefault("start_interval", values["interval"])
    return HealthCheckSpec(**values)


async def run_to_end(clock: FakeClock, task: asyncio.Task[Any], limit: int = 2000) -> None:
    """Advance the fake clock wake by wake until `task` ends (bounded in steps)."""
    for _ in range(limit):
        await clock.settle()
        if task.done():
            return
        await clock.advance_to_next()
    raise AssertionError(f"task still running after {limit} clock steps")


def start_wait(coro: Coroutine[Any, Any, HealthReport]) -> asyncio.Task[HealthReport]:
    return asyncio.ensure_future(coro)


# --- HealthMonitor --------------------------------------------------------------------------


class Recorder:
    """Collects callback calls in order, as the router daemon would see them."""

    def __init__(self, monitor_ref: list[HealthMonitor] | None = None) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.monitor_ref = monitor_ref or []

    def transition(self, old: TargetHealth, new: TargetHealth, result: ProbeResult) -> None:
        seen = self.monitor_ref[0].health if self.monitor_ref else None
        self.events.append(("transition", old, new, result.detail, seen))

    def result(self, result: ProbeResult) -> None:
        self.events.append(("result", result.ok))

    @property
    def transitions(self) -> list[tuple[TargetHealth, TargetHealth]]:
        return [(e[1], e[2]) for e in self.events if e[0] == "transition"]


def make_monitor(
    clock: FakeClock, prober: ScriptedProber, recorder: Recorder, initial: TargetHealth = X
) -> HealthMonitor:
    monitor = HealthMonitor(
        spec(),
        "127.0.0.1",
        9,
        initial=initial,
        on_transition=recorder.transition,
        on_result=recorder.result,
        clock=clock,
        prober=prober,
    )
    recorder.monitor_ref.append(monitor)
    return monitor


async def test_monitor_turns_unknown_healthy_only_after_healthy_threshold_passes() -> None:
    clock = FakeClock(start=0.0)
    prober = ScriptedProber(clock, [passing(), passing()], then=passing())
    recorder = Recorder()
    monitor = make_monitor(clock, prober, recorder)
    monitor.start()
    await clock.settle()
    assert prober.starts == [0.0]  # the first probe runs at once
    assert monitor.health is X
    await clock.advance(1.0)
    assert monitor.health is H
    assert recorder.transitions == [(X, H)]
    await monitor.stop()


async def test_monitor_marks_unhealthy_after_consecutive_failures_and_a_pass_resets_count() -> None:
    clock = FakeClock(start=0.0)
    script = [failing(), failing(), passing(), failing(), failing()]
    prober = ScriptedProber(clock, script, then=failing())
    recorder = Recorder()
    monitor = make_monitor(clock, prober, recorder, initial=H)
    monitor.start()
    await clock.advance(4.0)  # probes at 0..4: F F P F F -> never 3 in a row
    assert monitor.health is H
    assert recorder.transitions == []
    await clock.advance(1.0)  # the sixth probe is the third consecutive failure
    assert monitor.health is U
    assert recorder.transitions == [(H, U)]
    await monitor.stop()


async def test_monitor_recovers_unhealthy_and_goes_unknown_to_unhealthy() -> None:
    clock = FakeClock(start=0.0)
    script = [failing(), failing(), failing(), passing(), passing()]
    prober = ScriptedProber(clock, script, then=passing())
    recorder = Recorder()
    monitor = make_monitor(clock, prober, recorder)
    monitor.start()
    await clock.advance(2.0)
    assert monitor.health is U
    await clock.advance(2.0)
    assert monitor.health is H
    assert recorder.transitions == [(X, U), (U, H)]
    await monitor.stop()


async def test_monitor_calls_on_result_before_on_transition_with_health_already_updated() -> None:
    clock = FakeClock(start=0.0)
    prober = ScriptedProber(clock, [passing(), passing()], then=passing())
    recorder = Recorder()
    monitor = make_monitor(clock, prober, recorder)
    monitor.start()
    await clock.advance(1.0)
    assert recorder.events == [
        ("result", True),
        ("result", True),
        ("transition", X, H, "HTTP 200", H),
    ]
    await monitor.stop()


async def test_monitor_never_overlaps_probes_and_keeps_interval_from_probe_start() -> None:
    clock = FakeClock(start=0.0)
    # 0.3 s probes start every 1 s; a 2.5 s probe delays the next one until right after it ends.
    script = [passing(0.3), passing(2.5), passing(0.3), passing(0.3)]
    prober = ScriptedProber(clock, script, then=passing(0.3))
    monitor = make_monitor(clock, prober, Recorder())
    monitor.start()
    await clock.advance(5.0)
    await monitor.stop()
    assert prober.starts[:4] == [0.0, 1.0, 3.5, 4.5]
    assert prober.max_inflight == 1


async def test_monitor_survives_callbacks_and_probers_that_raise() -> None:
    clock = FakeClock(start=0.0)
    calls: list[str] = []

    def bad_transition(old: TargetHealth, new: TargetHealth, result: ProbeResult) -> None:
        calls.append(f"{old}->{new}")
        raise RuntimeError("callback bug")

    def bad_result(result: ProbeResult) -> None:
        calls.append("result")
        raise RuntimeError("callback bug")

    attempts = 0

    async def flaky_prober(spec: HealthCheckSpec, host: str, port: int) -> ProbeResult:
        nonlocal attempts
        attempts += 1
        if attempts <= 3:
            raise OSError("prober bug")
        return ProbeResult(True, "HTTP 200", 0.0, clock.time())

    monitor = HealthMonitor(
        spec(),
        "127.0.0.1",
        9,
        initial=H,
        on_transition=bad_transition,
        on_result=bad_result,
        clock=clock,
        prober=flaky_prober,
    )
    monitor.start()
    await clock.advance(5.0)
    assert monitor.running
    assert monitor.health is H
    assert calls.count("healthy->unhealthy") == 1
    assert calls.count("unhealthy->healthy") == 1
    assert attempts == 6
    await monitor.stop()


async def test_monitor_stop_cancels_the_probe_in_flight_and_nothing_runs_after() -> None:
    clock = FakeClock(start=0.0)
    prober = ScriptedProber(clock, [passing(10.0)])
    recorder = Recorder()
    monitor = make_monitor(clock, prober, recorder)
    monitor.start()
    await clock.settle()
    assert prober.inflight == 1
    await monitor.stop()
    assert not monitor.running
    assert prober.cancelled == 1
    await clock.advance(30.0)
    assert len(prober.starts) == 1
    assert recorder.events == []
    await monitor.stop()  # a second stop is harmless


# --- wait_until_healthy ---------------------------------------------------------------------


async def test_wait_returns_on_the_deciding_pass_with_a_report() -> None:
    clock = FakeClock(start=0.0)
    prober = ScriptedProber(clock, [failing("connection refused"), passing(0.1), passing(0.1)])
    results: list[ProbeResult] = []
    task = start_wait(
        wait_until_healthy(
            spec(), "127.0.0.1", 9, clock=clock, prober=prober, on_result=results.append
        )
    )
    await run_to_end(clock, task)
    report = task.result()
    assert prober.starts == [0.0, 1.0, 2.0]
    assert report.healthy
    assert report.probes == 3
    assert report.seconds == pytest.approx(2.1)  # returned at the end of the deciding probe
    assert report.last is not None and report.last.detail == "HTTP 200"
    assert report.reason == "healthy after 2 consecutive passes, last: HTTP 200"
    assert [r.ok for r in results] == [False, True, True]


async def test_wait_ignores_failures_during_start_period_then_counts_them() -> None:
    clock = FakeClock(start=0.0)
    prober = ScriptedProber(clock, [], then=failing("HTTP 503"))
    task = start_wait(
        wait_until_healthy(spec(start_period=5.0), "127.0.0.1", 9, clock=clock, prober=prober)
    )
    await run_to_end(clock, task)
    with pytest.raises(HealthCheckFailed) as caught:
        task.result()
    # Probes at 0..4 fall in the start period; 5, 6, 7 are the three counted failures.
    assert prober.starts[-1] == 7.0
    assert len(prober.starts) == 8
    assert str(caught.value) == (
        "unhealthy threshold reached: 3 consecutive failures, last: HTTP 503"
    )


async def test_wait_passes_when_app_boots_within_start_period_despite_many_failures() -> None:
    clock = FakeClock(start=0.0)
    prober = ScriptedProber(clock, [failing("connection refused")] * 8, then=passing())
    task = start_wait(
        wait_until_healthy(spec(start_period=10.0), "127.0.0.1", 9, clock=clock, prober=prober)
    )
    await run_to_end(clock, task)
    assert task.result().probes == 10
    assert clock.monotonic() == 9.0


async def test_wait_raises_at_the_deadline_with_the_last_detail() -> None:
    clock = FakeClock(start=0.0)
    prober = ScriptedProber(clock, [], then=failing("connection refused"))
    task = start_wait(
        wait_until_healthy(
            spec(deadline=60.0, start_period=100.0), "127.0.0.1", 9, clock=clock, prober=prober
        )
    )
    await run_to_end(clock, task)
    with pytest.raises(HealthCheckFailed) as caught:
        task.result()
    assert str(caught.value) == "not healthy within the 60 s deadline, last: connection refused"
    assert clock.monotonic() == 60.0
    assert len(prober.starts) == 60


async def test_wait_cuts_a_hung_probe_short_at_the_deadline() -> None:
    clock = FakeClock(start=0.0)
    prober = ScriptedProber(clock, [failing("HTTP 503"), passing(100.0)])
    task = start_wait(
        wait_until_healthy(spec(deadline=3.0), "127.0.0.1", 9, clock=clock, prober=prober)
    )
    await run_to_end(clock, task)
    with pytest.raises(HealthCheckFailed) as caught:
        task.result()
    assert str(caught.value) == "not healthy within the 3.0 s deadline, last: HTTP 503"
    assert clock.monotonic() == 3.0
    assert prober.cancelled == 1


async def test_wait_raises_promptly_when_the_process_exits_between_probes() -> None:
    clock = FakeClock(start=0.0)
    prober = ScriptedProber(clock, [], then=failing("connection refused"))
    alive_calls: list[float] = []

    async def alive() -> int | None:
        alive_calls.append(clock.monotonic())
        return 1 if clock.monotonic() >= 3.3 else None

    task = start_wait(
        wait_until_healthy(
            spec(interval=10.0, start_period=30.0),
            "127.0.0.1",
            9,
            clock=clock,
            prober=prober,
            alive=alive,
        )
    )
    await run_to_end(clock, task)
    with pytest.raises(HealthCheckFailed) as caught:
        task.result()
    assert str(caught.value) == "process exited with code 1 during start"
    assert 3.3 <= clock.monotonic() <= 3.3 + 0.2 + 1e-9  # noticed within one alive poll
    assert alive_calls[0] == 0.0  # checked before the first probe
    assert len(prober.starts) == 1


async def test_wait_notices_an_exit_while_a_probe_hangs_and_cancels_the_probe() -> None:
    clock = FakeClock(start=0.0)
    prober = ScriptedProber(clock, [passing(30.0)])

    async def alive() -> int | None:
        return 137 if clock.monotonic() >= 1.0 else None

    task = start_wait(
        wait_until_healthy(spec(), "127.0.0.1", 9, clock=clock, prober=prober, alive=alive)
    )
    await run_to_end(clock, task)
    with pytest.raises(HealthCheckFailed, match="exited with code 137 during start"):
        task.result()
    assert clock.monotonic() == pytest.approx(1.0)
    assert prober.cancelled == 1


async def test_wait_checks_alive_before_the_first_probe() -> None:
    clock = FakeClock(start=0.0)
    prober = ScriptedProber(clock, [passing(), passing()])

    async def already_dead() -> int | None:
        return 2

    with pytest.raises(HealthCheckFailed, match="exited with code 2"):
        await wait_until_healthy(
            spec(), "127.0.0.1", 9, clock=clock, prober=prober, alive=already_dead
        )
    assert prober.starts == []


async def test_wait_keeps_going_when_on_result_raises_and_a_pass_resets_failures() -> None:
    clock = FakeClock(start=0.0)
    script = [failing(), failing(), passing(), failing(), failing(), passing(), passing()]
    prober = ScriptedProber(clock, script)

    def broken(result: ProbeResult) -> None:
        raise RuntimeError("callback bug")

    task = start_wait(
        wait_until_healthy(spec(), "127.0.0.1", 9, clock=clock, prober=prober, on_result=broken)
    )
    await run_to_end(clock, task)
    assert task.result().probes == 7


async def test_wait_with_healthy_threshold_one_returns_right_after_the_first_pass() -> None:
    clock = FakeClock(start=0.0)
    prober = ScriptedProber(clock, [passing(0.25)])
    task = start_wait(
        wait_until_healthy(spec(healthy_threshold=1), "127.0.0.1", 9, clock=clock, prober=prober)
    )
    await run_to_end(clock, task)
    report = task.result()
    assert report.seconds == 0.25
    assert report.reason == "healthy after 1 consecutive pass, last: HTTP 200"


async def test_wait_counts_only_answered_failures_against_the_threshold() -> None:
    """A booting app that refuses connections is bounded by the deadline, not the threshold."""
    clock = FakeClock(start=0.0)
    prober = ScriptedProber(clock, [failing("connection refused")] * 8 + [passing()] * 2)
    task = start_wait(
        wait_until_healthy(
            spec(start_period=0.0, unhealthy_threshold=3),
            "127.0.0.1",
            1,
            clock=clock,
            prober=prober,
        )
    )
    await run_to_end(clock, task)
    report = task.result()
    assert report.healthy
    assert report.probes == 10


async def test_wait_probes_at_the_start_interval_not_the_running_interval() -> None:
    clock = FakeClock(start=0.0)
    prober = ScriptedProber(clock, [failing("connection refused"), passing(), passing()])
    task = start_wait(
        wait_until_healthy(
            spec(interval=10.0, start_interval=0.25), "127.0.0.1", 1, clock=clock, prober=prober
        )
    )
    await run_to_end(clock, task)
    assert prober.starts == [0.0, 0.25, 0.5]
