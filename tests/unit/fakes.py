"""Fakes for the engine's unit tests, only through the Protocol seams: Runtime, Router,
HistoryStore, and a prober (the health checker's seam).

`FakeRuntime` and `FakeRouter` append every call to one shared `journal`, so a test can check the
order of operations across both, and the router records how many targets served after each call.
"""

from __future__ import annotations

import asyncio
import builtins
import itertools
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from zerodown.config.loader import LoadedConfig
from zerodown.config.model import ZerodownConfig
from zerodown.domain.events import DeploymentEvent, DeploymentState
from zerodown.domain.records import DeploymentRecord, LockHolder
from zerodown.engine.deployer import Deployer, DeployRequest
from zerodown.errors import (
    InstanceNotFound,
    LockHeld,
    RouterError,
    RuntimeBackendError,
    StoreError,
)
from zerodown.health.checks import ProbeResult
from zerodown.health.spec import HealthCheckSpec
from zerodown.routers.base import (
    DrainResult,
    RouteSpec,
    RouteStatus,
    TargetHealth,
    TargetSpec,
    TargetStatus,
    check_pool_weights,
    pool_weight,
)
from zerodown.runtimes.base import ArtifactKind, InstanceInfo, InstanceSpec, InstanceState


@dataclass
class FakeRuntime:
    """Instances as records; `exit_revisions` die at once, `broken_revisions` cannot start."""

    journal: list[tuple[str, str]] = field(default_factory=list)
    instances: dict[str, InstanceInfo] = field(default_factory=dict)
    exit_revisions: set[str] = field(default_factory=set)
    broken_revisions: set[str] = field(default_factory=set)
    output: dict[str, builtins.list[str]] = field(default_factory=dict)  # by instance id
    name: str = "fake"
    artifacts: frozenset[ArtifactKind] = frozenset({ArtifactKind.DIRECTORY, ArtifactKind.IMAGE})
    _ports: itertools.count[int] = field(default_factory=lambda: itertools.count(20000))

    async def start(self, spec: InstanceSpec) -> InstanceInfo:
        self.journal.append(("start", spec.instance_id))
        if spec.revision in self.broken_revisions:
            raise RuntimeBackendError(f"cannot start {spec.instance_id}: broken revision")
        failed = spec.revision in self.exit_revisions
        info = InstanceInfo(
            instance_id=spec.instance_id,
            service=spec.service,
            revision=spec.revision,
            host="127.0.0.1",
            port=next(self._ports),
            state=InstanceState.FAILED if failed else InstanceState.RUNNING,
            exit_code=3 if failed else None,
            labels=dict(spec.labels),
        )
        self.instances[spec.instance_id] = info
        await asyncio.sleep(0)
        return info

    async def stop(self, instance_id: str, *, timeout: float | None = None) -> InstanceInfo:
        self.journal.append(("stop", instance_id))
        info = self._get(instance_id)
        info = replace(info, state=InstanceState.STOPPED, exit_code=0)
        self.instances[instance_id] = info
        await asyncio.sleep(0)
        return info

    async def inspect(self, instance_id: str) -> InstanceInfo:
        return self._get(instance_id)

    async def list(self, service: str | None = None) -> list[InstanceInfo]:
        return [i for i in self.instances.values() if service is None or i.service == service]

    async def remove(self, instance_id: str) -> None:
        self.journal.append(("remove", instance_id))
        info = self._get(instance_id)
        if info.state not in (InstanceState.STOPPED, InstanceState.FAILED):
            raise RuntimeBackendError(f"{instance_id} still runs")
        del self.instances[instance_id]

    async def output_tail(
        self, instance_id: str, lines: int, *, max_bytes: int | None = None
    ) -> builtins.list[str]:
        self._get(instance_id)
        return self.output.get(instance_id, [])[-lines:] if lines > 0 else []

    async def list_exited(self, service: str | None = None) -> builtins.list[InstanceInfo]:
        return []

    async def logs(
        self, instance_id: str, *, since: float | None = None, follow: bool = False
    ) -> AsyncIterator[str]:
        self._get(instance_id)
        for line in self.output.get(instance_id, []):
            yield line

    def running(self) -> builtins.list[InstanceInfo]:
        """Instances whose process runs."""
        return [i for i in self.instances.values() if i.state is InstanceState.RUNNING]

    def by_port(self, port: int) -> InstanceInfo | None:
        """The instance listening on `port`."""
        return next((i for i in self.instances.values() if i.port == port), None)

    def _get(self, instance_id: str) -> InstanceInfo:
        try:
            return self.instances[instance_id]
        except KeyError:
            raise InstanceNotFound(f"no instance {instance_id!r}") from None


@dataclass
class _Target:
    spec: TargetSpec
    health: TargetHealth
    draining: bool = False


@dataclass
class FakeRouter:
    """Routes, targets and pool weights in memory, with the seam's pool rules (an even split
    until pools are weighted, a pool forgotten with its last target); `serving_log` holds the
    serving count after every change."""

    journal: list[tuple[str, str]] = field(default_factory=list)
    routes: dict[str, RouteSpec] = field(default_factory=dict)
    targets: dict[str, dict[str, _Target]] = field(default_factory=dict)
    pools: dict[str, dict[str, int]] = field(default_factory=dict)
    serving_log: list[int] = field(default_factory=list)
    fail_add: bool = False
    name: str = "fake"

    async def apply_route(self, route: RouteSpec) -> None:
        self.journal.append(("route", route.service))
        self.routes[route.service] = route
        self.targets.setdefault(route.service, {})

    async def remove_route(self, service: str) -> None:
        self.routes.pop(service, None)
        self.targets.pop(service, None)
        self.pools.pop(service, None)

    async def add_target(self, target: TargetSpec, *, healthy: bool = False) -> None:
        if self.fail_add:
            raise RouterError(f"the router refused target {target.target_id}")
        if target.service not in self.routes:
            raise RouterError(f"no route for service {target.service!r}")
        self.journal.append(("admit", target.target_id))
        health = TargetHealth.HEALTHY if healthy else TargetHealth.UNKNOWN
        self.targets[target.service][target.target_id] = _Target(target, health)
        self._forget_empty_pools(target.service)
        self._log(target.service)

    async def set_pool_weights(self, service: str, weights: Mapping[str, int]) -> None:
        if service not in self.routes:
            raise RouterError(f"no route for service {service!r}")
        checked = check_pool_weights(service, weights)
        split = ",".join(f"{k}={v}" for k, v in sorted(checked.items()))
        self.journal.append(("pool_weights", split))
        self.pools.setdefault(service, {}).update(checked)
        self._log(service)

    async def drain_target(
        self, service: str, target_id: str, *, timeout: float | None = None
    ) -> DrainResult:
        self.journal.append(("drain", target_id))
        self.targets[service].pop(target_id, None)
        self._forget_empty_pools(service)
        self._log(service)
        await asyncio.sleep(0)
        return DrainResult(target_id, 0.0, 0, 0)

    async def status(self, service: str | None = None) -> list[RouteStatus]:
        names = [service] if service is not None else list(self.routes)
        return [
            RouteStatus(
                route=self.routes[name],
                targets=tuple(
                    TargetStatus(t.spec, t.health, t.draining, 0)
                    for t in self.targets[name].values()
                ),
                pools=dict(self.pools.get(name, {})),
            )
            for name in names
        ]

    def serving(self, service: str) -> list[TargetSpec]:
        """Targets that take live traffic now (healthy, not draining, in a weighted pool)."""
        pools = self.pools.get(service, {})
        return [
            t.spec
            for t in self.targets.get(service, {}).values()
            if t.health is TargetHealth.HEALTHY
            and not t.draining
            and pool_weight(pools, t.spec.pool) > 0
        ]

    def shares(self, service: str = "api.prod") -> dict[str, float]:
        """Revision -> percent of live traffic it gets now (a pool's share split evenly among
        its serving targets)."""
        pools = self.pools.get(service, {})
        serving = self.serving(service)
        counts: dict[str, int] = {}
        for t in serving:
            counts[t.pool] = counts.get(t.pool, 0) + 1
        total = sum(pool_weight(pools, p) if pools else n for p, n in counts.items())
        out: dict[str, float] = {}
        for t in serving:
            share = pool_weight(pools, t.pool) / counts[t.pool] if pools else 1
            out[t.revision] = out.get(t.revision, 0.0) + 100 * share / total
        return {r: round(v, 6) for r, v in out.items()}

    def _forget_empty_pools(self, service: str) -> None:
        used = {t.spec.pool for t in self.targets.get(service, {}).values()}
        pools = self.pools.get(service, {})
        for pool in [p for p in pools if p not in used]:
            del pools[pool]

    def _log(self, service: str) -> None:
        self.serving_log.append(len(self.serving(service)))


class FakeProber:
    """Answers health probes from the fake runtime: a revision in `unhealthy` fails; a revision
    in `gates` waits for its event first (to hold a deploy mid-batch), after `free_passes`."""

    def __init__(self, runtime: FakeRuntime) -> None:
        self.runtime = runtime
        self.unhealthy: set[str] = set()
        self.gates: dict[str, asyncio.Event] = {}
        self.waiting = asyncio.Event()  # set when a probe waits at a gate
        self.free_passes: dict[str, int] = {}  # probes of a gated revision let through first

    async def __call__(self, spec: HealthCheckSpec, host: str, port: int) -> ProbeResult:
        info = self.runtime.by_port(port)
        if info is None:
            return ProbeResult(False, "connection refused", 0.0, 0.0)
        gate = self.gates.get(info.revision)
        if gate is not None and not gate.is_set():
            if self.free_passes.get(info.revision, 0) > 0:
                self.free_passes[info.revision] -= 1
            else:
                self.waiting.set()
                await gate.wait()
        if info.revision in self.unhealthy:
            return ProbeResult(False, "HTTP 503", 0.0, 0.0, 503)
        return ProbeResult(True, "HTTP 200", 0.0, 0.0, 200)


class MemoryStore:
    """A HistoryStore in memory."""

    def __init__(self) -> None:
        self.records: dict[str, DeploymentRecord] = {}
        self.event_log: dict[str, list[DeploymentEvent]] = {}
        self.locks: dict[tuple[str, str], LockHolder] = {}
        self.order: list[str] = []
        self.lock_refused = asyncio.Event()  # set when acquire_lock refuses: someone waits

    async def create_deployment(self, record: DeploymentRecord) -> None:
        self.records[record.id] = record
        self.order.append(record.id)

    async def update_deployment(
        self,
        deployment_id: str,
        *,
        state: DeploymentState | None = None,
        reason: str | None = None,
        started_at: float | None = None,
        finished_at: float | None = None,
        previous_revision: str | None = None,
    ) -> DeploymentRecord:
        record = self.records[deployment_id]
        changes: dict[str, Any] = {
            "state": state,
            "reason": reason,
            "started_at": started_at,
            "finished_at": finished_at,
            "previous_revision": previous_revision,
        }
        record = replace(record, **{k: v for k, v in changes.items() if v is not None})
        self.records[deployment_id] = record
        return record

    async def get_deployment(self, deployment_id: str) -> DeploymentRecord:
        try:
            return self.records[deployment_id]
        except KeyError:
            raise StoreError(f"no deployment {deployment_id}") from None

    async def list_deployments(
        self, *, service: str | None = None, environment: str | None = None, limit: int = 50
    ) -> list[DeploymentRecord]:
        found = [
            self.records[i]
            for i in reversed(self.order)
            if service in (None, self.records[i].service)
            and environment in (None, self.records[i].environment)
        ]
        return found[:limit]

    async def last_successful(self, service: str, environment: str) -> DeploymentRecord | None:
        for record in await self.list_deployments(service=service, environment=environment):
            if record.state is DeploymentState.SUCCEEDED:
                return record
        return None

    async def unfinished(self) -> list[DeploymentRecord]:
        return [r for r in self.records.values() if not r.state.terminal]

    async def record_event(self, event: DeploymentEvent) -> None:
        self.event_log.setdefault(event.deployment_id, []).append(event)

    async def events(
        self, deployment_id: str, *, after: int = 0
    ) -> list[tuple[int, DeploymentEvent]]:
        found = list(enumerate(self.event_log.get(deployment_id, []), start=1))
        return [(seq, e) for seq, e in found if seq > after]

    async def acquire_lock(self, service: str, environment: str, holder: LockHolder) -> None:
        current = self.locks.get((service, environment))
        # pid -1 marks a holder the test declared dead: its lock is stale and taken over.
        if (
            current is not None
            and current.deployment_id != holder.deployment_id
            and current.pid != -1
        ):
            self.lock_refused.set()
            raise LockHeld(f"{service}/{environment} is being deployed by {current.deployment_id}")
        self.locks[(service, environment)] = holder

    async def release_lock(self, service: str, environment: str, deployment_id: str) -> None:
        current = self.locks.get((service, environment))
        if current is not None and current.deployment_id == deployment_id:
            del self.locks[(service, environment)]

    async def lock_holder(self, service: str, environment: str) -> LockHolder | None:
        return self.locks.get((service, environment))

    def sql_engine(self) -> None:
        return None  # no SQL: alarm history, rollups and deployment commands are off

    async def close(self) -> None:
        return None

    def kinds(self, deployment_id: str) -> list[str]:
        """The kinds of a deployment's events, in order."""
        return [e.kind.value for e in self.event_log.get(deployment_id, [])]


def revisions_of(instances: Iterable[InstanceInfo]) -> list[str]:
    """Sorted revisions of some instances."""
    return sorted(i.revision for i in instances)


FAST_HEALTH = {
    "path": "/health",
    "healthy_threshold": 1,
    "unhealthy_threshold": 1,
    "interval": 0.05,
    "start_interval": 0.05,
    "deadline": 10.0,
}


def make_loaded(
    tmp_path: Path,
    *,
    instances: int = 1,
    strategy: dict[str, Any] | None = None,
    hooks: dict[str, str] | None = None,
    auto_rollback: bool = True,
) -> LoadedConfig:
    """A config with one service `api` (no source, runs in tmp_path) and one environment `prod`."""
    data = {
        "state_dir": str(tmp_path / "state"),
        "services": {
            "api": {
                "workdir": ".",
                "run": "python app.py",
                "instances": instances,
                "health": FAST_HEALTH,
                "hooks": hooks or {},
            }
        },
        "environments": {
            "prod": {"strategy": strategy or {}, "auto_rollback": auto_rollback},
        },
    }
    return LoadedConfig(ZerodownConfig.model_validate(data), tmp_path / "zerodown.yml", tmp_path)


class Harness:
    """A Deployer over the fakes, and questions about where the fake fleet ended."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.journal: list[tuple[str, str]] = []
        self.runtime = FakeRuntime(journal=self.journal)
        self.router = FakeRouter(journal=self.journal)
        self.store = MemoryStore()
        self.prober = FakeProber(self.runtime)
        self.loaded = loaded
        self.deployer = self.make_deployer(loaded)

    def make_deployer(self, loaded: LoadedConfig, **kwargs: Any) -> Deployer:
        """A Deployer over this harness's fakes."""
        return Deployer(
            loaded,
            runtime=self.runtime,
            router=self.router,
            store=self.store,
            prober=self.prober,
            **kwargs,
        )

    async def deploy(self, revision: str) -> DeploymentRecord:
        """Deploy `revision` of api to prod."""
        return await self.deployer.deploy(DeployRequest("api", "prod", revision, "test"))

    def running_revisions(self) -> list[str]:
        """Revisions of the instances whose process runs."""
        return revisions_of(self.runtime.running())

    def serving_revisions(self) -> list[str]:
        """Revisions of the targets that take traffic."""
        return sorted(t.revision for t in self.router.serving("api.prod"))

    def ops(self, *kinds: str) -> list[tuple[str, str]]:
        """The journal, only the given kinds of call."""
        return [entry for entry in self.journal if entry[0] in kinds]
