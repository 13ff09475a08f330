"""`Deployer`: one deployment end to end, as a recorded state machine that never leaves a
service broken or half-switched.

pending -> (lock) -> in_progress -> build -> route -> strategy -> succeeded; on any failure
(health, hook, instance exit, router or runtime error, Ctrl-C, abort) the whole fleet goes back to
the previous revision with the same zero-downtime mechanics (rolling_back -> rolled_back), or
the deployment ends failed with a reason that says what is running now.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from zerodown.clock import Clock, SystemClock
from zerodown.config.loader import LoadedConfig
from zerodown.config.model import EnvironmentConfig, ServiceConfig, StrategyConfig
from zerodown.config.platform import PlatformConfig
from zerodown.domain.events import DeploymentObserver, DeploymentState, EventKind
from zerodown.domain.records import DeploymentRecord
from zerodown.engine.commands import inbox_for
from zerodown.engine.extensions import (
    DeploymentGuard,
    EnvSource,
    Masker,
    Verifier,
)
from zerodown.engine.fleet import Fleet, ReleaseSource, dominant_revision
from zerodown.engine.hooks import HookRunner
from zerodown.engine.plan import check_plan
from zerodown.engine.recorder import EventRecorder, NullSink
from zerodown.engine.run import DeploymentRun, RunServices, describe_failure, run_shielded
from zerodown.engine.strategies import StrategyContext, strategy_for
from zerodown.errors import BuildFailed, ConfigError, DeploymentAborted, LockHeld, ZerodownError
from zerodown.health.checks import Prober
from zerodown.metrics.source import MetricsSource, metrics_source
from zerodown.platforms.base import ManagedPlatform, Platform
from zerodown.platforms.engine import EnginePlatform
from zerodown.refs import REF_LABEL, given_ref
from zerodown.revisions import commit_info, prepare_release, resolve_revision
from zerodown.routers.base import Router
from zerodown.runtimes.base import Runtime
from zerodown.store.base import HistoryStore
from zerodown.store.locking import process_start_ticks, this_process_holder

log = logging.getLogger(__name__)

LOCK_POLL = 0.2  # how often a deploy that waits for the lock asks again


class PlatformOpener(Protocol):
    """`zerodown.platforms.registry.open_platform`'s signature (a seam for tests)."""

    def __call__(
        self, settings: PlatformConfig, environment: str, *, clock: Clock
    ) -> ManagedPlatform: ...


class ReleasePreparer(Protocol):
    """`zerodown.revisions.prepare_release`'s signature (a seam for tests)."""

    def __call__(
        self,
        service_name: str,
        service: ServiceConfig,
        *,
        root: Path,
        state_dir: Path,
        revision: str,
        on_line: Callable[[str], None] | None = None,
    ) -> Awaitable[ReleaseSource]: ...


@dataclass(frozen=True)
class DeployRequest:
    """What to deploy where, and who asked."""

    service: str
    environment: str
    revision: str
    actor: str
    kind: str = "deploy"  # or "rollback" (a manual `zerodown rollback`)
    warning: str | None = None  # recorded as the deployment's first decision


class Deployer:
    """Runs deployments of the services in one zerodown.yml through the Protocol seams."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        runtime: Runtime,
        router: Router,
        store: HistoryStore,
        observers: Sequence[DeploymentObserver] = (),
        clock: Clock | None = None,
        prober: Prober | None = None,
        prepare: ReleasePreparer | None = None,
        env_sources: Sequence[EnvSource] = (),
        guards: Sequence[DeploymentGuard] = (),
        verifiers: Sequence[Verifier] = (),
        masker: Masker | None = None,
        metrics: MetricsSource | None = None,
        platforms: PlatformOpener | None = None,
    ) -> None:
        self.loaded = loaded
        self._open_platform = platforms
        # Canary analysis reads these; by default the router's own measurements.
        self.metrics: MetricsSource = metrics or metrics_source(router)
        self.env_sources = list(env_sources)
        self.guards = list(guards)
        self.verifiers = list(verifiers)
        self.masker = masker
        self.runtime = runtime
        self.router = router
        self.store = store
        self.observers = list(observers)
        self.clock = clock or SystemClock()
        self.prober = prober
        self.prepare: ReleasePreparer = prepare or prepare_release
        # Running deployments by id: the event that aborts each, and why it was set.
        self._aborts: dict[str, tuple[asyncio.Event, list[str]]] = {}
        # Set by an abort of everything (serve stopping): a deployment still waiting for its
        # lock gives up, one that gets it now fails before it changes anything.
        self._closing: str | None = None

    # -- configuration ------------------------------------------------------------------------

    def lookup(self, service: str, environment: str) -> tuple[ServiceConfig, EnvironmentConfig]:
        """The service's and the environment's config; ConfigError naming what exists."""
        config = self.loaded.config
        if service not in config.services:
            known = ", ".join(sorted(config.services))
            raise ConfigError(f"no service {service!r} in {self.loaded.path}: known: {known}")
        if environment not in config.environments:
            known = ", ".join(sorted(config.environments))
            raise ConfigError(
                f"no environment {environment!r} in {self.loaded.path}: known: {known}"
            )
        return config.services[service], config.environments[environment]

    def platform(self, service: ServiceConfig, environment: str, strategy: Any) -> Platform:
        """Who runs the rollout: the service's `platform:` (ECS), else zerodown's engine."""
        if service.platform is None:
            return EnginePlatform(lambda run: self._replace(run, strategy))
        return self.managed_platform(service.platform, environment)

    def managed_platform(self, settings: PlatformConfig, environment: str) -> ManagedPlatform:
        """The managed platform `settings` describe, for `environment` (boto3 loads here)."""
        opener = self._open_platform
        if opener is None:
            from zerodown.platforms.registry import open_platform

            opener = open_platform
        return opener(settings, environment, clock=self.clock)

    def open_run(
        self, record: DeploymentRecord, service: ServiceConfig, environment: EnvironmentConfig
    ) -> DeploymentRun:
        """A run of `record`: its own event recorder and fleet, and what it needs of this
        deployer (nothing else of it)."""
        recorder = EventRecorder(
            record.id, self.store, self.observers, self.clock, masker=self.masker
        )
        fleet = self.fleet(record.service, record.environment, record.id, recorder)
        services = RunServices(
            store=self.store,
            runtime=self.runtime,
            router=self.router,
            clock=self.clock,
            prepare=self._prepare_revision,
            masker=self.masker,
        )
        return DeploymentRun(services, record, service, environment, recorder=recorder, fleet=fleet)

    async def load_environment(self, run: DeploymentRun, release_path: Path | None = None) -> None:
        """Give the run's new instances the environment every `EnvSource` adds (secrets)."""
        for source in self.env_sources:
            run.fleet.extra_env.update(await source.environment(run.context(release_path)))

    def _prepare_revision(
        self,
        service_name: str,
        service: ServiceConfig,
        revision: str,
        on_line: Callable[[str], None],
    ) -> Awaitable[ReleaseSource]:
        return self.prepare(
            service_name,
            service,
            root=self.loaded.root,
            state_dir=self.loaded.state_dir,
            revision=revision,
            on_line=on_line,
        )

    def fleet(self, service: str, environment: str, deployment_id: str, sink: Any) -> Fleet:
        """The fleet of `service` in `environment`, reporting to `sink`."""
        service_cfg, env_cfg = self.lookup(service, environment)
        return Fleet(
            service_name=service,
            service=service_cfg,
            environment_name=environment,
            environment=env_cfg,
            runtime=self.runtime,
            router=self.router,
            deployment_id=deployment_id,
            sink=sink,
            balance=self.loaded.config.router.balance,
            clock=self.clock,
            prober=self.prober,
        )

    # -- the public operations ----------------------------------------------------------------

    def abort(self, deployment_id: str | None = None, reason: str = "aborted by a user") -> None:
        """Make a running deployment (default: every one, and those still waiting for their
        lock) fail now and roll back (Ctrl-C, abort, serve stopping)."""
        if deployment_id is None:
            self._closing = reason
        for running, (event, why) in self._aborts.items():
            if deployment_id is None or running.startswith(deployment_id):
                why.append(reason)
                event.set()

    async def rollback(
        self, service: str, environment: str, *, to: str | None = None, actor: str
    ) -> DeploymentRecord:
        """Deploy an earlier revision: `to`, or the newest successful one not running now."""
        self.lookup(service, environment)
        target = to or await self._rollback_target(service, environment)
        warning = None if to is None else await self._failed_before(service, environment, to)
        return await self.deploy(
            DeployRequest(service, environment, target, actor, "rollback", warning=warning)
        )

    async def deploy(
        self, request: DeployRequest, *, wait_for_lock: float | None = None
    ) -> DeploymentRecord:
        """Run one deployment to a terminal state and return its record.

        A refused request is not a deployment: ConfigError (an unknown service, environment or
        revision) and LockHeld (another deployment runs) are raised before anything is recorded
        or started. CancelledError comes after the rollback a cancellation caused has finished.
        """
        service, environment = self.lookup(request.service, request.environment)
        check_plan(environment.strategy, service.instances)
        platform = self.platform(service, request.environment, strategy_for(environment.strategy))
        revision, message, commit_time = await self._resolve(service, request.revision)
        record = self._new_record(request, revision, message, commit_time, environment.strategy)
        # The lock comes before the record: a deployment that never got it never existed.
        await self._lock(record, wait_for_lock)
        try:
            await self.store.create_deployment(record)
        except BaseException:
            await self.store.release_lock(record.service, record.environment, record.id)
            raise
        run = self.open_run(record, service, environment)
        try:
            try:
                if request.warning:
                    warning = request.warning
                    await run.emit(EventKind.DECISION, warning, {"warning": warning})
                await self._execute(run, platform)
            finally:
                # released as soon as it ended: slow observers must not hold the next deploy
                await self.store.release_lock(record.service, record.environment, record.id)
            return run.record
        finally:
            await run.close()

    # -- the steps ----------------------------------------------------------------------------

    async def _execute(self, run: DeploymentRun, platform: Platform) -> None:
        abort, why = self._aborts[run.record.id] = (asyncio.Event(), [])
        if self._closing is not None:  # aborted while it waited for its lock
            why.append(self._closing)
            abort.set()
        await run.transition(DeploymentState.IN_PROGRESS, started_at=self.clock.time())
        work = asyncio.ensure_future(platform.roll_out(run))
        aborted = asyncio.ensure_future(abort.wait())
        guards = {asyncio.ensure_future(guard.watch(run.context())) for guard in self.guards}
        try:
            try:
                pending = {work, aborted, *guards}
                while not work.done():
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    tripped = [g for g in done & guards if g.exception() is not None]
                    if aborted in done or tripped:
                        work.cancel()
                        await asyncio.wait({work})
                        if tripped:
                            raise tripped[0].exception()  # type: ignore[misc]
                        raise DeploymentAborted(why[0])
                work.result()
            finally:
                self._aborts.pop(run.record.id, None)
                aborted.cancel()
                for guard_task in guards:
                    guard_task.cancel()
                if not work.done():
                    work.cancel()
                    await asyncio.wait({work})
        except BaseException as exc:
            if isinstance(exc, GeneratorExit):
                raise
            if not isinstance(exc, asyncio.CancelledError | ZerodownError):
                log.exception("deployment %s failed unexpectedly", run.record.id)
            interrupted = await run_shielded(platform.fail(run, describe_failure(exc), exc))
            if isinstance(exc, asyncio.CancelledError) or interrupted:
                raise asyncio.CancelledError() from None
            return
        await run.transition(DeploymentState.SUCCEEDED)

    async def _replace(self, run: DeploymentRun, strategy: Any) -> None:
        record = run.record
        try:
            release = await run.prepare(record.revision)
        except BuildFailed as exc:
            raise BuildFailed(f"build failed: {exc}") from exc
        fleet = run.fleet
        await self.load_environment(run, release.path)
        await fleet.ensure_route()
        live = await fleet.live()
        previous = dominant_revision(live)
        if previous is None:
            last = await self.store.last_successful(record.service, record.environment)
            previous = last.revision if last else None
        await run.note_previous(previous, sum(1 for m in live if m.serving))
        await run.emit(
            EventKind.DECISION,
            f"{strategy.name}: {len(live)} live instance(s) of "
            f"{previous[:12] if previous else 'nothing'} -> {run.service.instances} of "
            f"{release.sha[:12]}",
            {"previous_revision": previous, "live": [m.instance_id for m in live]},
        )
        hooks = HookRunner(
            {str(name): hook for name, hook in run.service.hooks.items()},
            cwd=release.path,
            base_env={**fleet.extra_env, **self._hook_env(run, release)},  # hooks get secrets
            emit=run.record_event,
            deployment_id=record.id,
        )
        ctx = StrategyContext(
            fleet=fleet,
            release=release,
            hooks=hooks,
            config=run.environment.strategy,
            wanted=run.service.instances,
            old=list(live),
            deployment=run.context(release.path),
            verifiers=self.verifiers,
            commands=inbox_for(self.store, record.id),
            metrics=self.metrics,
        )
        await strategy.run(ctx)
        await fleet.sweep()
        for verifier in self.verifiers:
            await verifier.verify(run.context(release.path))

    def _hook_env(self, run: DeploymentRun, release: ReleaseSource) -> dict[str, str]:
        record = run.record
        return {
            "ZERODOWN_DEPLOYMENT_ID": record.id,
            "ZERODOWN_SERVICE": record.service,
            "ZERODOWN_ENVIRONMENT": record.environment,
            "ZERODOWN_REVISION": release.sha,
            "ZERODOWN_PREVIOUS_REVISION": run.previous or "",
            "ZERODOWN_STRATEGY": record.strategy,
            "ZERODOWN_RELEASE_DIR": str(release.path),
        }

    async def _resolve(
        self, service: ServiceConfig, revision: str
    ) -> tuple[str, str | None, float | None]:
        """(revision to record, commit message, commit time); ConfigError for a revision the
        source repository does not have (bad input: nothing is recorded)."""
        if service.source is None:
            return revision, None, None
        repo = self.loaded.root / service.source.repo
        try:
            sha = await resolve_revision(repo, revision)
            message, commit_time = await commit_info(repo, sha)
        except BuildFailed as exc:
            raise ConfigError(f"{exc}; nothing was deployed", field="--revision") from exc
        return sha, message, commit_time

    def _new_record(
        self,
        request: DeployRequest,
        revision: str,
        message: str | None,
        commit_time: float | None,
        strategy: StrategyConfig,
    ) -> DeploymentRecord:
        pid = os.getpid()
        return DeploymentRecord(
            id=uuid.uuid4().hex,
            service=request.service,
            environment=request.environment,
            revision=revision,
            strategy=strategy.type,
            state=DeploymentState.PENDING,
            actor=request.actor,
            created_at=self.clock.time(),
            kind=request.kind,
            commit_message=message,
            commit_time=commit_time,
            holder_pid=pid,
            holder_start=process_start_ticks(pid),
            # the tag or branch the user named, so history and status can say "v2 (1f03ba05)"
            labels={REF_LABEL: ref} if (ref := given_ref(request.revision, revision)) else {},
        )

    async def _lock(self, record: DeploymentRecord, wait: float | None) -> None:
        holder = this_process_holder(record.id, now=self.clock.time())
        deadline = self.clock.monotonic() + (wait or 0.0)
        while True:
            try:
                await self.store.acquire_lock(record.service, record.environment, holder)
                return
            except LockHeld:
                if self._closing is not None:
                    raise DeploymentAborted(
                        f"{self._closing} while it waited for the lock; nothing was deployed"
                    ) from None
                if self.clock.monotonic() >= deadline:
                    raise
            # Another process holds the lock: nothing to await across processes but the store.
            await self.clock.sleep(min(LOCK_POLL, max(0.0, deadline - self.clock.monotonic())))

    async def _failed_before(self, service: str, environment: str, revision: str) -> str | None:
        """A warning when the newest deployment of `revision` here did not succeed: rolling
        back to it is allowed (it may have failed for another reason), but never silently."""
        sha, _, _ = await self._resolve(self.lookup(service, environment)[0], revision)
        for record in await self.store.list_deployments(
            service=service, environment=environment, limit=200
        ):
            if record.revision == sha and record.state.terminal:
                if record.state is DeploymentState.SUCCEEDED:
                    return None
                return (
                    f"warning: the last deployment of {revision} to {environment} ended "
                    f"{record.state.value} ({record.reason or 'no reason recorded'}); "
                    "rolling back to it anyway, as --to asked"
                )
        return None

    async def _rollback_target(self, service: str, environment: str) -> str:
        fleet = self.fleet(service, environment, "", NullSink())
        current = dominant_revision(await fleet.live())
        if current is None:
            last = await self.store.last_successful(service, environment)
            current = last.revision if last else None
        for record in await self.store.list_deployments(
            service=service, environment=environment, limit=200
        ):
            if record.state is DeploymentState.SUCCEEDED and record.revision != current:
                return record.revision
        raise ConfigError(
            f"no earlier successful deployment of {service} in {environment} to roll back to: "
            "name a revision with --to"
        )
