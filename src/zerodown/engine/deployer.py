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
from zerodown.domain.events import (
    DeploymentObserver,
    DeploymentState,
    EventKind,
    check_transition,
)
from zerodown.domain.records import DeploymentRecord
from zerodown.engine.commands import inbox_for
from zerodown.engine.extensions import (
    DeploymentContext,
    DeploymentGuard,
    EnvSource,
    Masker,
    Verifier,
)
from zerodown.engine.fleet import Fleet, ReleaseSource, dominant_revision
from zerodown.engine.hooks import HookRunner
from zerodown.engine.plan import check_plan
from zerodown.engine.recorder import EventRecorder, NullSink
from zerodown.engine.strategies import StrategyContext, strategy_for
from zerodown.errors import BuildFailed, ConfigError, DeploymentAborted, LockHeld, ZerodownError
from zerodown.health.checks import Prober
from zerodown.metrics.source import MetricsSource, metrics_source
from zerodown.refs import REF_LABEL, given_ref
from zerodown.revisions import commit_info, prepare_release, resolve_revision
from zerodown.routers.base import Router
from zerodown.runtimes.base import Runtime
from zerodown.store.base import HistoryStore
from zerodown.store.locking import process_start_ticks, this_process_holder

log = logging.getLogger(__name__)

MAX_BUILD_LINES = 1000  # build output recorded per deployment; the build log keeps the rest
LOCK_POLL = 0.2  # how often a deploy that waits for the lock asks again


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


async def run_shielded(work: Awaitable[None]) -> bool:
    """Run `work` to its end even if the caller is cancelled meanwhile (a second Ctrl-C).

    Returns True when a cancellation arrived while waiting; the caller re-raises it once the work
    is done, so a rollback is never left half-way.
    """
    task = asyncio.ensure_future(work)
    interrupted = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                break
            interrupted = True
    task.result()
    return interrupted


def describe_failure(exc: BaseException) -> str:
    """The sentence a deployment records as the reason it failed."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled (Ctrl-C or the control plane stopped)"
    if isinstance(exc, DeploymentAborted):
        return str(exc) or "aborted by a user"
    if isinstance(exc, ConfigError):
        return exc.reason
    text = str(exc) or type(exc).__name__
    if type(exc).__module__ == "zerodown.errors":
        return text
    return f"unexpected error: {type(exc).__name__}: {text}"


class DeploymentRun:
    """One deployment's moving parts: its record, its events, its fleet, its state changes."""

    def __init__(
        self,
        deployer: Deployer,
        record: DeploymentRecord,
        service: ServiceConfig,
        environment: EnvironmentConfig,
    ) -> None:
        self.deployer = deployer
        self.record = record
        self.service = service
        self.environment = environment
        self.recorder = EventRecorder(
            record.id, deployer.store, deployer.observers, deployer.clock, masker=deployer.masker
        )
        self.fleet = deployer.fleet(record.service, record.environment, record.id, self.recorder)
        self.previous: str | None = record.previous_revision
        self.restore_count = service.instances

    @property
    def state(self) -> DeploymentState:
        """The deployment's state as last recorded."""
        return self.record.state

    def context(self, release_path: Path | None = None) -> DeploymentContext:
        """What extensions (secrets, alarms, verification) see of this deployment."""
        return DeploymentContext(
            record=self.record,
            service=self.service,
            environment=self.environment,
            route=self.fleet.route_name,
            runtime=self.deployer.runtime,
            router=self.deployer.router,
            emit=self.recorder.emit,
            release_path=release_path,
        )

    async def transition(self, wanted: DeploymentState, **fields: Any) -> None:
        """Move to `wanted` (checked against the table), store it, and record a STATE event."""
        current = self.record.state
        check_transition(current, wanted)
        if wanted.terminal:
            fields.setdefault("finished_at", self.deployer.clock.time())
        if fields.get("reason") and self.deployer.masker is not None:  # e.g. a hook's last line
            fields["reason"] = self.deployer.masker.mask(fields["reason"])
        self.record = await self.deployer.store.update_deployment(
            self.record.id, state=wanted, **fields
        )
        message = f"{current.value} -> {wanted.value}"
        if fields.get("reason"):
            message += f": {fields['reason']}"
        await self.recorder.emit(
            EventKind.STATE, message, {"from": current.value, "to": wanted.value}
        )

    async def prepare(self, revision: str) -> ReleaseSource:
        """Resolve/export/build `revision` (BUILD event); BuildFailed on failure."""
        clock = self.deployer.clock
        started = clock.monotonic()
        lines = 0

        def on_line(line: str) -> None:
            nonlocal lines
            lines += 1
            if lines <= MAX_BUILD_LINES:
                self.recorder.emit_soon(EventKind.BUILD_OUTPUT, line, {"line": line})

        loaded = self.deployer.loaded
        release = await self.deployer.prepare(
            self.record.service,
            self.service,
            root=loaded.root,
            state_dir=loaded.state_dir,
            revision=revision,
            on_line=on_line,
        )
        seconds = clock.monotonic() - started
        cached = bool(getattr(release, "cached", False))
        await self.recorder.emit(
            EventKind.BUILD,
            f"release {release.sha[:12]} ready in {seconds:.2f} s"
            + (" (cached)" if cached else ""),
            {"sha": release.sha, "cached": cached, "seconds": seconds, "path": str(release.path)},
        )
        return release

    async def fail(self, reason: str) -> None:
        """The failure path: decide, roll the whole fleet back (or not), record how it ended."""
        rollback = self.environment.auto_rollback
        await self.recorder.emit(
            EventKind.DECISION,
            f"deployment failed: {reason}",
            {"reason": reason, "auto_rollback": rollback, "previous_revision": self.previous},
        )
        if not self.fleet.touched and self.state is DeploymentState.IN_PROGRESS:
            await self.transition(DeploymentState.FAILED, reason=f"{reason}; nothing was changed")
            return
        if not rollback and self.state is DeploymentState.IN_PROGRESS:
            await self.transition(
                DeploymentState.FAILED,
                reason=f"{reason}; auto_rollback is off for {self.record.environment}: "
                "the fleet was left as it is",
            )
            return
        await self.roll_back(reason)

    async def roll_back(self, reason: str, *, ended: str | None = None) -> None:
        """Restore the previous revision everywhere (or clear a first deploy) and record it.

        `ended`: the reason to record when the rollback succeeds (default: why, and to what).
        """
        if self.state is not DeploymentState.ROLLING_BACK:
            await self.transition(DeploymentState.ROLLING_BACK, reason=reason)
        clock = self.deployer.clock
        started = clock.monotonic()
        target = self.previous
        await self.recorder.emit(
            EventKind.ROLLBACK_STARTED,
            f"rolling back to {target[:12]}" if target else "removing the new instances",
            {"to_revision": target, "reason": reason},
        )
        try:
            if target is None:
                await self.fleet.clear(self.record.id)
            else:
                release = await self.prepare(target)
                await self.fleet.restore(release, self.restore_count, undo=self.record.id)
        except Exception as exc:
            log.exception("rollback of %s failed", self.record.id)
            what = f"to {target[:12]}" if target else "of the new instances"
            await self.transition(
                DeploymentState.FAILED,
                reason=f"{reason}; the rollback {what} failed too: {describe_failure(exc)}",
            )
            return
        seconds = clock.monotonic() - started
        await self.recorder.emit(
            EventKind.ROLLBACK_FINISHED,
            f"rollback finished in {seconds:.2f} s",
            {"to_revision": target, "seconds": seconds},
        )
        if target is None:
            await self.transition(
                DeploymentState.FAILED,
                reason=f"{reason}; nothing was running before; nothing is running now",
            )
        else:
            final = ended or f"{reason}; rolled back to {target[:12]}"
            await self.transition(DeploymentState.ROLLED_BACK, reason=final)


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
    ) -> None:
        self.loaded = loaded
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
        strategy = strategy_for(environment.strategy)
        revision, message, commit_time = await self._resolve(service, request.revision)
        record = self._new_record(request, revision, message, commit_time, environment.strategy)
        # The lock comes before the record: a deployment that never got it never existed.
        await self._lock(record, wait_for_lock)
        try:
            await self.store.create_deployment(record)
        except BaseException:
            await self.store.release_lock(record.service, record.environment, record.id)
            raise
        run = DeploymentRun(self, record, service, environment)
        try:
            try:
                if request.warning:
                    await run.recorder.emit(
                        EventKind.DECISION, request.warning, {"warning": request.warning}
                    )
                await self._execute(run, strategy)
            finally:
                # released as soon as it ended: slow observers must not hold the next deploy
                await self.store.release_lock(record.service, record.environment, record.id)
            return run.record
        finally:
            await run.recorder.close()

    # -- the steps ----------------------------------------------------------------------------

    async def _execute(self, run: DeploymentRun, strategy: Any) -> None:
        abort, why = self._aborts[run.record.id] = (asyncio.Event(), [])
        if self._closing is not None:  # aborted while it waited for its lock
            why.append(self._closing)
            abort.set()
        await run.transition(DeploymentState.IN_PROGRESS, started_at=self.clock.time())
        work = asyncio.ensure_future(self._replace(run, strategy))
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
            interrupted = await run_shielded(run.fail(describe_failure(exc)))
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
        for source in self.env_sources:
            fleet.extra_env.update(await source.environment(run.context(release.path)))
        await fleet.ensure_route()
        live = await fleet.live()
        previous = dominant_revision(live)
        if previous is None:
            last = await self.store.last_successful(record.service, record.environment)
            previous = last.revision if last else None
        run.previous = previous
        run.restore_count = sum(1 for m in live if m.serving) or run.service.instances
        run.record = await self.store.update_deployment(record.id, previous_revision=previous)
        await run.recorder.emit(
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
            emit=run.recorder.record,
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
