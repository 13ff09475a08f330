"""`Fleet`: the instances of one service in one environment, and every step that changes them.

A fleet is what the router and the runtime both know: the router's targets of the route
`<service>.<environment>` and the runtime's instances labelled with that environment. The engine
owns what the instances are: deployment and revision come from the runtime's labels, the pool
from what the engine told the router (`TargetSpec.pool`); the router only says what it does with
them (health, draining, pool weights). Each step (launch, wait for health, admit, drain, stop)
records an event before and after it happens.

Traffic moves by pools: instances that replace others one by one (rolling, in-place,
all-at-once) join the pool that serves the route, so traffic stays split per instance; a
progressive strategy (canary, blue/green) gives its new instances a pool of their own
(`new_pool`) and moves traffic between pools with one `set_pool_weights` per step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from zerodown.clock import Clock, SystemClock
from zerodown.config.model import EnvironmentConfig, ServiceConfig
from zerodown.domain.events import EventKind
from zerodown.domain.routes import route_name
from zerodown.errors import (
    ConfigError,
    HealthCheckFailed,
    InstanceNotFound,
    RouterError,
    RuntimeBackendError,
)
from zerodown.health.checks import Prober, ProbeResult, probe
from zerodown.health.monitor import wait_until_healthy
from zerodown.routers.base import (
    EVEN_WEIGHT,
    PREVIEW_POOL,
    Balance,
    Router,
    RouteSpec,
    RouteStatus,
    TargetHealth,
    TargetSpec,
)
from zerodown.runtimes.base import (
    Artifact,
    ArtifactKind,
    ContainerImage,
    InstanceInfo,
    InstanceSpec,
    InstanceState,
    ReleaseDirectory,
    Runtime,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_WEIGHT = EVEN_WEIGHT  # a pool's weight per instance when instances share traffic equally
# How much of a failed instance's output its failure reason and INSTANCE_FAILED event carry.
FAILURE_OUTPUT_LINES = 20
FAILURE_OUTPUT_BYTES = 4096
# Runtime states of an instance that is (or is about to be) a process worth counting.
_RUNNING_STATES = (InstanceState.STARTING, InstanceState.RUNNING, InstanceState.RESTARTING)


class EventSink(Protocol):
    """Where fleet steps report: `emit` waits until the event is recorded, `emit_soon` does not."""

    async def emit(self, kind: EventKind, message: str, data: dict[str, Any] | None = None) -> None:
        """Record one event (in order with every other event of the deployment)."""
        ...

    def emit_soon(self, kind: EventKind, message: str, data: dict[str, Any] | None = None) -> None:
        """Queue one event from synchronous code; it keeps its place in the order."""
        ...


class ReleaseSource(Protocol):
    """What the fleet needs of a prepared release: its revision, the directory it runs in, and
    the image built for it (a reference pinned by manifest digest), if any."""

    @property
    def sha(self) -> str: ...

    @property
    def path(self) -> Path: ...

    @property
    def image(self) -> str | None: ...


@dataclass(frozen=True)
class FleetMember:
    """One instance of the fleet as the router and the runtime see it together."""

    instance_id: str
    revision: str
    deployment: str | None  # the deployment that started it (runtime label), when known
    host: str
    port: int
    in_router: bool
    draining: bool = False
    router_health: TargetHealth | None = None
    state: InstanceState | None = None  # None: the runtime does not know it
    weight: int = DEFAULT_WEIGHT  # its pool's weight in the router (0: warm, out of rotation)
    pool: str = ""  # the router pool the engine put it in ("" before it is admitted)

    @property
    def preview(self) -> bool:
        """In the router's preview pool (blue/green before the switch)."""
        return self.in_router and self.pool == PREVIEW_POOL

    @property
    def serving(self) -> bool:
        """In live rotation: in the router, not draining, weight above 0, not preview-only."""
        return self.in_router and not self.draining and self.weight > 0 and not self.preview

    @property
    def warm(self) -> bool:
        """In the router and not draining, but out of live rotation (weight 0 or preview)."""
        return self.in_router and not self.draining and not self.serving

    @property
    def running(self) -> bool:
        """The runtime runs its process (or is about to)."""
        return self.state in _RUNNING_STATES

    @property
    def live(self) -> bool:
        """Part of the fleet: serving traffic or running a process."""
        return self.in_router or self.running


async def run_all(aws: Iterable[Awaitable[T]]) -> list[T]:
    """Run awaitables concurrently; on the first failure cancel the rest and raise that error.

    Unlike a TaskGroup this raises the error itself (not an ExceptionGroup), so the reason a
    deployment records is the sentence of the step that failed.
    """
    tasks = [asyncio.ensure_future(aw) for aw in aws]
    if not tasks:
        return []
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:
        await _cancel_and_wait(tasks)
        raise
    failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
    if failed:
        await _cancel_and_wait(tasks)
        error = failed[0].exception()
        assert error is not None
        raise error
    return [t.result() for t in tasks]


async def _cancel_and_wait(tasks: Sequence[asyncio.Future[Any]]) -> None:
    for task in tasks:
        task.cancel()
    # Waiting lets every cancelled step run its cleanup before the caller moves on.
    await asyncio.wait(tasks)


def pool_shares(members: Iterable[FleetMember], total: int) -> dict[str, int]:
    """`total` per instance, summed per pool: weights that give each member the same share."""
    counts = Counter(m.pool for m in members)
    return {pool: total * count for pool, count in counts.items()}


def dominant_revision(members: Sequence[FleetMember]) -> str | None:
    """The revision most of the fleet runs (serving instances count first)."""
    pool = [m for m in members if m.serving] or list(members)
    counts = Counter(m.revision for m in pool if m.revision)
    return counts.most_common(1)[0][0] if counts else None


class Fleet:
    """One service in one environment: naming, launching, checking, admitting, retiring."""

    def __init__(
        self,
        *,
        service_name: str,
        service: ServiceConfig,
        environment_name: str,
        environment: EnvironmentConfig,
        runtime: Runtime,
        router: Router,
        deployment_id: str,
        sink: EventSink,
        balance: Balance = "least_inflight",
        clock: Clock | None = None,
        prober: Prober | None = None,
    ) -> None:
        self.service_name = service_name
        self.service = service
        self.environment_name = environment_name
        self.environment = environment
        self.runtime = runtime
        self.router = router
        self.deployment_id = deployment_id
        self.sink = sink
        self.balance: Balance = balance
        self.clock = clock or SystemClock()
        self.prober = prober or probe
        self.health = service.health.to_spec()
        # Set by the first step that changes something: a failure before it needs no rollback.
        self.touched = False
        # Resolved once per deployment by the EnvSources (secrets): never written to disk.
        self.extra_env: dict[str, str] = {}

    @property
    def route_name(self) -> str:
        """The router's name for this service in this environment."""
        return route_name(self.service_name, self.environment_name)

    def route_spec(self) -> RouteSpec:
        """The route as the config describes it."""
        env_hosts = self.environment.hosts  # the environment's own, else the service's
        return RouteSpec(
            service=self.route_name,
            hosts=self.service.hosts if env_hosts is None else env_hosts,
            path_prefix=self.service.path_prefix,
            listen=self.environment.listen or (),  # resolved per environment by the config
            balance=self.balance,
            health=self.health,
            drain_timeout=self.service.drain_timeout,
            sticky=self.environment.strategy.sticky,
            preview_header=self.environment.strategy.preview_header,
        )

    async def ensure_route(self) -> None:
        """Create or update the route (its targets are kept)."""
        await self.router.apply_route(self.route_spec())

    def new_instance_id(self, revision: str) -> str:
        """`<service>-<env>-<sha7>-<4 hex>`: readable, and unique within the fleet."""
        short = "".join(c for c in revision if c.isalnum())[:7] or "rev"
        return f"{self.service_name}-{self.environment_name}-{short}-{secrets.token_hex(2)}"

    def new_pool(self, revision: str) -> str:
        """`<sha12>-<deployment8>`: the pool of instances this deployment starts on its own (a
        canary, blue/green's green); unique per deployment, so even a redeploy of the serving
        revision gets a pool of its own."""
        short = "".join(c for c in revision if c.isalnum())[:12] or "rev"
        return f"{short}-{self.deployment_id[:8]}"

    # -- looking -----------------------------------------------------------------------------

    async def route_status(self) -> RouteStatus | None:
        """This fleet's route as the router sees it now; None before the route exists."""
        routes = await self.router.status()
        return next((r for r in routes if r.route.service == self.route_name), None)

    async def members(self) -> list[FleetMember]:
        """Every instance the router or the runtime knows for this fleet, dead ones included.

        Deployment and revision are the runtime's labels (a target the runtime lost keeps the
        revision the engine gave the router, and no deployment); nothing is read back from
        router labels, so a router restarted without them changes nothing."""
        route = await self.route_status()
        targets = {t.spec.target_id: t for t in route.targets} if route else {}
        instances = {
            i.instance_id: i
            for i in await self.runtime.list(self.service_name)
            if i.labels.get("environment") == self.environment_name
        }
        found: list[FleetMember] = []
        for instance_id in sorted(targets.keys() | instances.keys()):
            target, info = targets.get(instance_id), instances.get(instance_id)
            found.append(
                FleetMember(
                    instance_id=instance_id,
                    revision=info.revision if info else target.spec.revision if target else "",
                    deployment=info.labels.get("deployment") if info else None,
                    host=info.host if info else target.spec.host if target else "",
                    port=info.port if info else target.spec.port if target else 0,
                    in_router=target is not None,
                    draining=target.draining if target else False,
                    router_health=target.health if target else None,
                    state=info.state if info else None,
                    weight=route.pool_weight(target.spec.pool) if route and target else 0,
                    pool=target.spec.pool if target else "",
                )
            )
        return found

    async def live(self) -> list[FleetMember]:
        """The live fleet: instances in the router or running in the runtime."""
        return [m for m in await self.members() if m.live]

    # -- changing ----------------------------------------------------------------------------

    def instance_spec(self, release: ReleaseSource, instance_id: str) -> InstanceSpec:
        """What to run for one instance of `release` (environment: service, then environment)."""
        env = {
            **self.service.env,
            **self.environment.env,
            **self.extra_env,
            "ZERODOWN_ENVIRONMENT": self.environment_name,
            "ZERODOWN_DEPLOYMENT_ID": self.deployment_id,
        }
        return InstanceSpec(
            service=self.service_name,
            revision=release.sha,
            instance_id=instance_id,
            artifact=self.artifact(release),
            env=env,
            port_env=self.service.port_env,
            stop_timeout=self.service.stop_timeout,
            memory_limit=self.service.memory,
            restart=self.service.restart,
            labels=self.labels(release.sha),
        )

    def artifact(self, release: ReleaseSource) -> Artifact:
        """The release's image for a runtime that runs images, else its directory."""
        if release.image is not None and ArtifactKind.IMAGE in self.runtime.artifacts:
            return ContainerImage(release.image, self.service.run)
        if ArtifactKind.DIRECTORY in self.runtime.artifacts and self.service.run is not None:
            return ReleaseDirectory(self.service.run, str(release.path))
        if ArtifactKind.DIRECTORY in self.runtime.artifacts:
            raise ConfigError(
                f"service {self.service_name} has no `run:` command, and the {self.runtime.name} "
                "runtime runs processes: write `run:` or use `runtime: {backend: docker}`",
                field=f"services.{self.service_name}.run",
            )
        raise ConfigError(
            f"service {self.service_name} has no image for revision {release.sha[:12]}, and the "
            f"{self.runtime.name} runtime runs only images: give the service "
            "`build: {image: ...}` so each revision gets one",
            field=f"services.{self.service_name}.build",
        )

    def labels(self, revision: str) -> dict[str, str]:
        """Labels that tie an instance to this fleet, this deployment and its revision."""
        return {
            "environment": self.environment_name,
            "deployment": self.deployment_id,
            "revision": revision,
        }

    async def launch(self, release: ReleaseSource, instance_id: str | None = None) -> FleetMember:
        """Start one instance of `release`; returns once its process runs (not once healthy)."""
        instance_id = instance_id or self.new_instance_id(release.sha)
        self.touched = True
        info = await self.runtime.start(self.instance_spec(release, instance_id))
        await self.sink.emit(
            EventKind.INSTANCE_STARTING,
            f"started {instance_id} ({release.sha[:12]}) on {info.address}",
            {"instance": instance_id, "revision": release.sha, "port": info.port},
        )
        return self._member_of(info)

    async def await_healthy(self, member: FleetMember) -> None:
        """Probe a starting instance until healthy; HealthCheckFailed names it and says why."""
        instance_id = member.instance_id
        waiting_since = self.clock.monotonic()
        start_period = self.health.start_period

        def on_result(result: ProbeResult) -> None:
            elapsed = self.clock.monotonic() - waiting_since
            self.sink.emit_soon(
                EventKind.HEALTH_PROBE,
                f"{instance_id}: {'pass' if result.ok else 'fail'}: {result.detail}",
                {
                    "instance": instance_id,
                    "ok": result.ok,
                    "detail": result.detail,
                    "seconds": result.seconds,
                    "status_code": result.status_code,
                    # failures within the start period do not count: progress lines say so
                    "start_period": start_period,
                    "start_period_left": round(max(0.0, start_period - elapsed), 3),
                },
            )

        try:
            report = await wait_until_healthy(
                self.health,
                member.host,
                member.port,
                alive=self._exit_code_of(instance_id),
                on_result=on_result,
                clock=self.clock,
                prober=self.prober,
            )
        except HealthCheckFailed as exc:
            revision = member.revision[:12]
            output = await self._last_output(instance_id)
            why = str(exc)
            if output:  # an app that crashed at start says why in its last lines
                why += "; last output:\n" + "\n".join(f"  | {line}" for line in output)
            reason = f"instance {instance_id} ({revision}) failed its health check: {why}"
            await self.sink.emit(
                EventKind.INSTANCE_FAILED,
                reason,
                {"instance": instance_id, "reason": str(exc), "output": output},
            )
            raise HealthCheckFailed(reason) from exc
        await self.sink.emit(
            EventKind.INSTANCE_HEALTHY,
            f"{instance_id} is healthy after {report.seconds:.2f} s ({report.probes} probes)",
            {"instance": instance_id, "seconds": report.seconds, "probes": report.probes},
        )

    async def _last_output(self, instance_id: str) -> list[str]:
        """The instance's last lines of output, for a failure reason; [] when unreadable."""
        try:
            return await self.runtime.output_tail(
                instance_id, FAILURE_OUTPUT_LINES, max_bytes=FAILURE_OUTPUT_BYTES
            )
        except (InstanceNotFound, RuntimeBackendError, OSError) as exc:
            log.warning("could not read the output of %s: %s", instance_id, exc)
            return []

    def _exit_code_of(self, instance_id: str) -> Callable[[], Awaitable[int | None]]:
        async def alive() -> int | None:
            # Any exit counts during a start, even one the supervisor is about to restart.
            try:
                info = await self.runtime.inspect(instance_id)
            except InstanceNotFound:
                return -1
            exited = info.state in (InstanceState.STOPPED, InstanceState.FAILED)
            if exited or info.state is InstanceState.RESTARTING or info.restarts > 0:
                return info.exit_code if info.exit_code is not None else -1
            return None

        return alive

    async def admit(
        self, member: FleetMember, *, pool: str | None = None, preview: bool = False
    ) -> FleetMember:
        """Put the (checked) instance in the router and return it as admitted.

        Without `pool` it joins the pool that serves the route and takes traffic now, as much
        as each instance there (a pool is made when none serves); with `pool` it joins that pool
        at whatever weight the pool has (a progressive strategy weighs it); with `preview` it
        gets only the requests that carry the preview header (blue/green before its switch)."""
        if preview:
            chosen = PREVIEW_POOL
            await self._add(member, chosen)
        elif pool is not None:
            chosen = pool
            await self._add(member, chosen)
        else:
            chosen = await self._join_live_pool(member)
        live = pool is None and not preview
        what = "preview traffic" if preview else "traffic" if live else f"its place in {chosen}"
        await self.sink.emit(
            EventKind.TRAFFIC_ADDED,
            f"{member.instance_id} takes {what}",
            {
                "instance": member.instance_id,
                "revision": member.revision,
                "pool": chosen,
                "weight": DEFAULT_WEIGHT if live else 0,
                "preview": preview,
            },
        )
        return replace(member, in_router=True, pool=chosen, draining=False)

    async def _add(self, member: FleetMember, pool: str) -> None:
        target = TargetSpec(
            service=self.route_name,
            target_id=member.instance_id,
            host=member.host,
            port=member.port,
            revision=member.revision,
            pool=pool,
        )
        await self.router.add_target(target, healthy=True)

    async def _join_live_pool(self, member: FleetMember) -> str:
        """Add the member to the pool that serves the route; the pool's name. Concurrent admits
        of one deployment agree without a lock: a pool they make is `new_pool(revision)`, one
        name, and weighing it is idempotent."""
        route = await self.route_status()
        pools = dict(route.pools) if route else {}
        serving = {p: w for p, w in pools.items() if w > 0}
        if serving:  # the pool with the largest share
            pool = max(serving, key=lambda p: (serving[p], p))
            await self._add(member, pool)
            return pool
        if not pools:  # an even split: join the pool most instances are in
            counts = Counter(
                t.spec.pool
                for t in (route.targets if route else ())
                if not t.spec.preview and not t.draining
            )
            pool = counts.most_common(1)[0][0] if counts else self.new_pool(member.revision)
            await self._add(member, pool)
            return pool
        # Every pool is out of rotation (warm leftovers): a new pool takes the traffic. It is
        # weighed once it has a target: a weight of a pool without one may be forgotten.
        pool = self.new_pool(member.revision)
        await self._add(member, pool)
        await self.router.set_pool_weights(self.route_name, {pool: DEFAULT_WEIGHT})
        return pool

    async def reserve_pool(self, pool: str) -> None:
        """Make sure `pool` gets no live traffic until it is weighted: a route with an even
        split gets explicit pool weights first (each serving pool as much as it has now)."""
        route = await self.route_status()
        if route is None or route.pools:
            return  # unweighted pools of a weighted route take no live traffic
        counts = Counter(t.spec.pool for t in route.targets if not t.spec.preview)
        weights = {p: DEFAULT_WEIGHT * n for p, n in counts.items() if p != pool}
        await self.router.set_pool_weights(self.route_name, weights | {pool: 0})

    async def drain(self, member: FleetMember) -> None:
        """Take the instance out of the router once its in-flight requests end (or time out)."""
        if not member.in_router:
            return
        self.touched = True
        await self.sink.emit(
            EventKind.DRAIN_STARTED,
            f"draining {member.instance_id}",
            {"instance": member.instance_id},
        )
        result = await self.router.drain_target(
            self.route_name, member.instance_id, timeout=self.service.drain_timeout
        )
        await self.sink.emit(
            EventKind.DRAIN_FINISHED,
            f"drained {member.instance_id} in {result.seconds:.2f} s "
            f"({result.finished} finished, {result.forced} cut at the timeout)",
            {
                "instance": member.instance_id,
                "seconds": result.seconds,
                "finished": result.finished,
                "forced": result.forced,
            },
        )

    async def stop(self, member: FleetMember) -> None:
        """Stop the instance's process and forget it (an instance the runtime lost is skipped)."""
        self.touched = True
        try:
            info = await self.runtime.stop(member.instance_id, timeout=self.service.stop_timeout)
        except InstanceNotFound:
            return
        await self.sink.emit(
            EventKind.INSTANCE_STOPPED,
            f"stopped {member.instance_id} (exit code {info.exit_code})",
            {"instance": member.instance_id, "exit_code": info.exit_code},
        )
        with contextlib.suppress(InstanceNotFound):
            await self.runtime.remove(member.instance_id)

    async def retire(self, member: FleetMember) -> None:
        """Drain, then stop: no request in flight is cut (up to the drain timeout)."""
        await self.drain(member)
        await self.stop(member)

    async def sweep(self) -> None:
        """Forget instances that no longer run and take no traffic (crashed or left stopped).

        Housekeeping after a success: a failure here is logged, never raised.
        """
        try:
            members = await self.members()
        except (RouterError, RuntimeBackendError) as exc:
            log.warning("could not list %s to clean up: %s", self.route_name, exc)
            return
        for member in members:
            if not member.live and member.state is not None:
                try:
                    await self.runtime.remove(member.instance_id)
                except RuntimeBackendError as exc:
                    # Housekeeping only: a leftover that cannot go now goes on a later deploy.
                    log.warning("could not remove %s: %s", member.instance_id, exc)

    async def start_admitted(self, release: ReleaseSource, pool: str | None = None) -> FleetMember:
        """Launch one instance, wait until healthy, admit it (to `pool`, else the live pool):
        the unit of a surge."""
        member = await self.launch(release)
        await self.await_healthy(member)
        return await self.admit(member, pool=pool)

    async def restore(self, release: ReleaseSource, wanted: int, *, undo: str) -> None:
        """Bring the fleet back to `wanted` serving instances of `release`, then retire the rest.

        Instances of `release` not started by deployment `undo` stay; missing ones start first and
        take traffic before anything of `undo` is drained, so traffic never stops. If a missing one
        cannot start, only instances that serve no traffic are retired and the error is raised.
        """
        members = await self.live()
        # Serving ones first, then warm ones (blue kept at weight 0): those need only a flip.
        keep = sorted(
            (
                m
                for m in members
                if (m.serving or (m.warm and not m.preview))
                and m.revision == release.sha
                and m.deployment != undo
                and m.router_health is not TargetHealth.UNHEALTHY
            ),
            key=lambda m: not m.serving,
        )[:wanted]
        missing = wanted - len(keep)
        # New ones join the pool of those kept (a warm one: they take traffic with the flip).
        pool = keep[0].pool if keep else None
        outcomes = await asyncio.gather(
            *(self.start_admitted(release, pool) for _ in range(missing)), return_exceptions=True
        )
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        started = [o for o in outcomes if isinstance(o, FleetMember)]
        kept = {m.instance_id for m in [*keep, *started]}
        await self._flip_to([*keep, *started], members, kept, everything=not errors)
        rest = [m for m in await self.live() if m.instance_id not in kept]
        if errors:
            rest = [m for m in rest if not m.serving]
        await run_all(self.retire(m) for m in rest)
        if errors:
            raise errors[0]

    async def _flip_to(
        self,
        keep: Sequence[FleetMember],
        members: Sequence[FleetMember],
        kept: set[str],
        *,
        everything: bool,
    ) -> None:
        """Give the pools of `keep` live traffic (warm ones back in rotation, a canary's
        baseline its full share) and (if `everything`) take it from pools where nothing is
        kept, in one atomic router step: a rollback to a warm fleet is a traffic flip. A pool
        with kept and other instances keeps serving; those others drain away after."""
        kept_pools = {m.pool for m in keep}
        out = {
            m.pool
            for m in members
            if m.serving and m.instance_id not in kept and m.pool not in kept_pools
        }
        warm = any(m.weight == 0 for m in keep)
        uneven = len({m.weight for m in keep}) > 1
        if not warm and not uneven and not (everything and out):
            return  # everything kept serves already (as much as the rest): the rest drains
        route = await self.route_status()
        weights = pool_shares(keep, DEFAULT_WEIGHT)
        if everything:
            weights |= {pool: 0 for pool in out}
        elif route is not None and not route.pools:
            # an even split becomes explicit: pools left serving keep an instance's share each
            weights |= pool_shares((m for m in members if m.pool in out), DEFAULT_WEIGHT)
        await self.router.set_pool_weights(self.route_name, weights)
        await self.sink.emit(
            EventKind.DECISION,
            f"traffic back on {len([m for m in keep if m.pool in weights])} instance(s) "
            f"(pool weights {weights})",
            {"pool_weights": weights},
        )

    async def clear(self, deployment: str) -> None:
        """Retire every instance that `deployment` started (a first deploy that failed)."""
        await run_all(self.retire(m) for m in await self.live() if m.deployment == deployment)

    def _member_of(self, info: InstanceInfo) -> FleetMember:
        return FleetMember(
            instance_id=info.instance_id,
            revision=info.revision,
            deployment=info.labels.get("deployment", self.deployment_id),
            host=info.host,
            port=info.port,
            in_router=False,
            state=info.state,
        )
