"""Health over time: the router's ongoing checks per target, the engine's wait for a new instance.

`HealthMonitor` turns a stream of probes into HEALTHY/UNHEALTHY with ALB-style thresholds.
`wait_until_healthy` decides, for an instance that is starting, whether it may take traffic.
All timing goes through a `Clock`, so both are tested with a `FakeClock` and a scripted prober.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from zerodown.clock import Clock, SystemClock
from zerodown.errors import HealthCheckFailed
from zerodown.health.checks import Prober, ProbeResult, format_seconds, probe
from zerodown.health.spec import HealthCheckSpec, TargetHealth

log = logging.getLogger(__name__)

ALIVE_POLL = 0.2  # how often a starting instance's process is checked while we wait

TransitionCallback = Callable[[TargetHealth, TargetHealth, ProbeResult], None]
ResultCallback = Callable[[ProbeResult], None]
AliveCheck = Callable[[], Awaitable[int | None]]


async def _run_prober(
    prober: Prober, spec: HealthCheckSpec, host: str, port: int, clock: Clock
) -> ProbeResult:
    """Run a prober; a prober bug becomes a failed result so the caller's loop keeps going."""
    at, started = clock.time(), clock.monotonic()
    try:
        return await prober(spec, host, port)
    except Exception as exc:  # a prober must not raise; if one does, it is a failed check
        log.exception("health prober for %s:%s raised", host, port)
        return ProbeResult(False, f"probe error: {exc!r}", clock.monotonic() - started, at)


def _notify(callback: Callable[..., None] | None, *args: object) -> None:
    # A callback belongs to someone else; its bug must not stop health checking.
    if callback is None:
        return
    try:
        callback(*args)
    except Exception:
        log.exception("health callback %r raised", callback)


class HealthMonitor:
    """Ongoing checks of one target: a probe every `interval`, never two at once, with thresholds.

    `unhealthy_threshold` consecutive failures make the target UNHEALTHY and `healthy_threshold`
    consecutive passes make it HEALTHY (from UNKNOWN as well). `start_period` does not apply here:
    it belongs to `wait_until_healthy`, which vets a starting instance before the router sees it.
    """

    def __init__(
        self,
        spec: HealthCheckSpec,
        host: str,
        port: int,
        *,
        initial: TargetHealth,
        on_transition: TransitionCallback,
        on_result: ResultCallback | None = None,
        clock: Clock | None = None,
        prober: Prober = probe,
    ) -> None:
        self.spec = spec
        self.host = host
        self.port = port
        self._health = initial
        self._on_transition = on_transition
        self._on_result = on_result
        self._clock = clock or SystemClock()
        self._prober = prober
        self._passes = 0
        self._failures = 0
        self._last: ProbeResult | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def health(self) -> TargetHealth:
        """The target's health as of the last probe."""
        return self._health

    @property
    def last(self) -> ProbeResult | None:
        """The last probe's result, or None before the first one ends."""
        return self._last

    @property
    def running(self) -> bool:
        """Whether the probe loop is running."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start probing (the first probe runs at once); a no-op while already running."""
        if self.running:
            return
        name = f"health {self.host}:{self.port}"
        self._task = asyncio.get_running_loop().create_task(self._run(), name=name)

    async def stop(self) -> None:
        """Stop probing; a probe in flight is cancelled and no callback runs after this returns."""
        task, self._task = self._task, None
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        interval = max(0.0, self.spec.interval)
        while True:
            started = self._clock.monotonic()
            result = await _run_prober(self._prober, self.spec, self.host, self.port, self._clock)
            self._record(result)
            # The next probe starts `interval` after this one started, or at once if it ran long;
            # sleeping 0 still yields so a prober that returns instantly cannot starve the loop.
            await self._clock.sleep(started + interval - self._clock.monotonic())

    def _record(self, result: ProbeResult) -> None:
        self._last = result
        _notify(self._on_result, result)
        if result.ok:
            self._passes, self._failures = self._passes + 1, 0
            wanted, count, threshold = (
                TargetHealth.HEALTHY,
                self._passes,
                self.spec.healthy_threshold,
            )
        else:
            self._passes, self._failures = 0, self._failures + 1
            wanted, count, threshold = (
                TargetHealth.UNHEALTHY,
                self._failures,
                self.spec.unhealthy_threshold,
            )
        if self._health is not wanted and count >= threshold:
            old, self._health = self._health, wanted
            log.info("target %s:%s is %s (%s)", self.host, self.port, wanted.value, result.detail)
            _notify(self._on_transition, old, wanted, result)


@dataclass(frozen=True)
class HealthReport:
    """How a wait for a starting instance ended (returned only when it became healthy)."""

    healthy: bool
    seconds: float
    probes: int
    last: ProbeResult | None
    reason: str


class _StartWatch:
    """One wait for one starting instance: its counters, its deadline, its process."""

    def __init__(
        self,
        spec: HealthCheckSpec,
        host: str,
        port: int,
        alive: AliveCheck | None,
        on_result: ResultCallback | None,
        clock: Clock,
        prober: Prober,
    ) -> None:
        self.spec, self.host, self.port = spec, host, port
        self.alive, self.on_result, self.clock, self.prober = alive, on_result, clock, prober
        self.started = clock.monotonic()
        self.deadline_at = self.started + spec.deadline
        self.start_period_end = self.started + spec.start_period
        self.probes = 0
        self.passes = 0
        self.failures = 0
        self.last: ProbeResult | None = None

    async def run(self) -> HealthReport:
        # A starting instance is probed at the short start interval, so a deploy waits no longer
        # than needed (Docker's start_interval); the running-instance interval is for monitors.
        interval = max(0.0, self.spec.start_interval)
        while True:
            await self._check_alive()
            if self.clock.monotonic() >= self.deadline_at:
                self._fail_deadline()
            probe_started = self.clock.monotonic()
            result = await self._probe_watching()
            self.probes += 1
            self.last = result
            _notify(self.on_result, result)
            if result.ok:
                self.passes, self.failures = self.passes + 1, 0
                if self.passes >= self.spec.healthy_threshold:
                    return self._report()
            else:
                self.passes = 0
                # Failures during the start period do not count: the app may still be booting.
                # Nor does an HTTP check that got no answer at all (not listening yet): only the
                # deadline bounds a boot; an app that answers "unhealthy" fails on the threshold.
                answered = self.spec.kind != "http" or result.status_code is not None
                if probe_started >= self.start_period_end and answered:
                    self.failures += 1
                if self.failures >= self.spec.unhealthy_threshold:
                    raise HealthCheckFailed(
                        f"unhealthy threshold reached: {self.failures} consecutive failures, "
                        f"last: {result.detail}"
                    )
            await self._wait_watching(min(probe_started + interval, self.deadline_at))

    def _report(self) -> HealthReport:
        assert self.last is not None
        plural = "" if self.passes == 1 else "es"
        return HealthReport(
            healthy=True,
            seconds=self.clock.monotonic() - self.started,
            probes=self.probes,
            last=self.last,
            reason=(
                f"healthy after {self.passes} consecutive pass{plural}, last: {self.last.detail}"
            ),
        )

    def _fail_deadline(self) -> None:
        last = self.last.detail if self.last else "no probe finished"
        raise HealthCheckFailed(
            f"not healthy within the {format_seconds(self.spec.deadline)} s deadline, last: {last}"
        )

    async def _check_alive(self) -> None:
        if self.alive is None:
            return
        code = await self.alive()
        if code is not None:
            raise HealthCheckFailed(f"process exited with code {code} during start")

    async def _probe_watching(self) -> ProbeResult:
        """One probe, cut short when the process exits or the deadline passes while it runs."""
        task = asyncio.ensure_future(
            _run_prober(self.prober, self.spec, self.host, self.port, self.clock)
        )
        try:
            while not task.done():
                remaining = self.deadline_at - self.clock.monotonic()
                if remaining <= 0:
                    self._fail_deadline()
                step = remaining if self.alive is None else min(ALIVE_POLL, remaining)
                tick = asyncio.ensure_future(self.clock.sleep(step))
                try:
                    await asyncio.wait({task, tick}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    tick.cancel()
                if not task.done():
                    await self._check_alive()
            return task.result()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _wait_watching(self, until: float) -> None:
        """Sleep until `until`, checking the process at least every ALIVE_POLL seconds."""
        while (remaining := until - self.clock.monotonic()) > 0:
            await self.clock.sleep(remaining if self.alive is None else min(ALIVE_POLL, remaining))
            await self._check_alive()


async def wait_until_healthy(
    spec: HealthCheckSpec,
    host: str,
    port: int,
    *,
    alive: AliveCheck | None = None,
    on_result: ResultCallback | None = None,
    clock: Clock | None = None,
    prober: Prober = probe,
) -> HealthReport:
    """Probe a starting instance until `healthy_threshold` consecutive passes; raise if it fails.

    Raises `HealthCheckFailed` when `unhealthy_threshold` failures follow the start period, when
    `deadline` passes, or when `alive()` reports the process exited. Returns right after the
    deciding probe, so the wait adds nothing to the instance's boot time but probe spacing.
    """
    watch = _StartWatch(spec, host, port, alive, on_result, clock or SystemClock(), prober)
    report = await watch.run()
    log.info("%s:%s %s in %.2f s", host, port, report.reason, report.seconds)
    return report
