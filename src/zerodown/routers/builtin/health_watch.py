"""`HealthWatch`: the built-in router's active health checks, one `HealthMonitor` per target,
kept in step with the routing table."""

from __future__ import annotations

import asyncio
from typing import Any

from zerodown.errors import RouterError
from zerodown.health.checks import ProbeResult
from zerodown.health.monitor import HealthMonitor
from zerodown.health.spec import HealthCheckSpec
from zerodown.routers.base import TargetHealth
from zerodown.routers.builtin.state import EventLog
from zerodown.routers.builtin.table import RoutingTable

# Brings targets of routes without active checks into (or back into) rotation once they accept
# connections; without it a target marked down by one refused connect would stay out for good.
RECOVERY_CHECK = HealthCheckSpec(
    kind="tcp", timeout=1.0, interval=1.0, healthy_threshold=2, unhealthy_threshold=1
)


class HealthWatch:
    """A `HealthMonitor` per target of every route with a health spec, in step with the table.

    A route without a spec has only passive checks; its targets that are not HEALTHY (added
    unchecked, or marked down by a failed connect) get `RECOVERY_CHECK` until they pass it.
    """

    def __init__(self, table: RoutingTable, events: EventLog) -> None:
        self._table = table
        self._events = events
        self._monitors: dict[tuple[str, str], tuple[Any, HealthMonitor]] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._scheduled = False

    def schedule(self) -> None:
        """Reconcile soon (once per burst of table changes)."""
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.reconcile)

    def reconcile(self) -> None:
        """Start monitors for new targets, restart changed ones, stop those of removed targets."""
        self._scheduled = False
        wanted: dict[tuple[str, str], tuple[Any, TargetHealth]] = {}
        for route in self._table.routes():
            for target in self._table.targets(route.spec.service):
                spec = route.spec.health
                if spec is None and target.health is not TargetHealth.HEALTHY:
                    spec = RECOVERY_CHECK
                if spec is None or target.draining:
                    continue
                key = (route.spec.service, target.spec.target_id)
                wanted[key] = ((spec, target.spec.host, target.spec.port), target.health)
        for key, (identity, monitor) in list(self._monitors.items()):
            if key not in wanted or wanted[key][0] != identity:
                del self._monitors[key]
                self._stop_later(monitor)
        for key, (identity, health) in wanted.items():
            if key not in self._monitors:
                self._monitors[key] = (identity, self._start(key, identity, health))

    def _start(self, key: tuple[str, str], identity: Any, health: TargetHealth) -> HealthMonitor:
        spec: HealthCheckSpec = identity[0]
        service, target_id = key
        holder: list[HealthMonitor] = []

        def on_transition(old: TargetHealth, new: TargetHealth, result: ProbeResult) -> None:
            self._set_health(service, target_id, new)
            self._events.record(
                "health",
                service=service,
                target_id=target_id,
                old=old.value,
                new=new.value,
                detail=result.detail,
            )

        def on_result(result: ProbeResult) -> None:
            # Passive failures (connect refused) mark a target unhealthy behind the monitor's
            # back, and the monitor sees no transition when its own verdict stays HEALTHY: a
            # passing probe that agrees with that verdict puts the target back in rotation.
            verdict = holder[0].health if holder else TargetHealth.UNKNOWN
            if result.ok and verdict is TargetHealth.HEALTHY:
                self._set_health(service, target_id, verdict, only_if_different=True)

        monitor = HealthMonitor(
            spec,
            identity[1],
            identity[2],
            initial=health,
            on_transition=on_transition,
            on_result=on_result,
        )
        holder.append(monitor)
        monitor.start()
        return monitor

    def _set_health(
        self, service: str, target_id: str, health: TargetHealth, *, only_if_different: bool = False
    ) -> None:
        try:
            if only_if_different:
                current = {t.spec.target_id: t.health for t in self._table.targets(service)}
                if current.get(target_id, health) is health:
                    return
            self._table.set_health(service, target_id, health)
        except RouterError:
            pass  # removed while the probe ran; reconcile stops its monitor

    def _stop_later(self, monitor: HealthMonitor) -> None:
        task = asyncio.get_running_loop().create_task(monitor.stop())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def stop(self) -> None:
        """Stop every monitor."""
        for _, monitor in self._monitors.values():
            self._stop_later(monitor)
        self._monitors.clear()
        if self._stopping:
            await asyncio.wait(set(self._stopping), timeout=5.0)
