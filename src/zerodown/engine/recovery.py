"""Crash recovery: finish the deployments a control plane left unfinished when it died.

Run when a control plane starts. A deployment whose holder process is gone is taken over under
its lock and ended: completed if the fleet already is what it wanted, rolled back otherwise.
Instances of the previous revision keep serving until their replacements do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from zerodown.clock import Clock
from zerodown.config.loader import LoadedConfig
from zerodown.domain.events import DeploymentObserver, DeploymentState, EventKind
from zerodown.domain.records import DeploymentRecord
from zerodown.engine.deployer import Deployer, PlatformOpener
from zerodown.engine.extensions import EnvSource, Masker
from zerodown.engine.fleet import dominant_revision, run_all
from zerodown.engine.run import DeploymentRun, describe_failure, run_shielded
from zerodown.errors import ConfigError, LockHeld
from zerodown.health.checks import Prober
from zerodown.routers.base import Router, TargetHealth
from zerodown.runtimes.base import Runtime
from zerodown.store.base import HistoryStore
from zerodown.store.locking import process_start_ticks, this_process_holder

log = logging.getLogger(__name__)


def holder_alive(record: DeploymentRecord) -> bool:
    """Whether the process that ran `record` still runs (same pid and same start time)."""
    if record.holder_pid is None:
        return False
    ticks = process_start_ticks(record.holder_pid)
    return ticks is not None and (record.holder_start is None or ticks == record.holder_start)


async def recover_unfinished(
    loaded: LoadedConfig,
    runtime: Runtime,
    router: Router,
    store: HistoryStore,
    observers: Sequence[DeploymentObserver] = (),
    *,
    clock: Clock | None = None,
    prober: Prober | None = None,
    env_sources: Sequence[EnvSource] = (),
    masker: Masker | None = None,
    platforms: PlatformOpener | None = None,
) -> list[DeploymentRecord]:
    """End every unfinished deployment whose holder died; return them as they ended.

    `env_sources` (secrets) give restored instances the environment a deployment gives them."""
    deployer = Deployer(
        loaded,
        runtime=runtime,
        router=router,
        store=store,
        observers=observers,
        clock=clock,
        prober=prober,
        env_sources=env_sources,
        masker=masker,
        platforms=platforms,
    )
    ended: list[DeploymentRecord] = []
    for record in await store.unfinished():
        if holder_alive(record):
            continue
        finished = await _recover_one(deployer, record)
        if finished is not None:
            ended.append(finished)
    return ended


async def _recover_one(deployer: Deployer, record: DeploymentRecord) -> DeploymentRecord | None:
    store = deployer.store
    try:
        service, environment = deployer.lookup(record.service, record.environment)
    except ConfigError as exc:
        return await _abandon(deployer, record, exc)
    holder = this_process_holder(record.id, now=deployer.clock.time())
    try:
        # The dead holder's lock is stale: the store releases it and gives it to us.
        await store.acquire_lock(record.service, record.environment, holder)
    except LockHeld:
        log.info("deployment %s: its lock is held by a live process; leaving it", record.id)
        return None
    run = deployer.open_run(record, service, environment)
    try:
        interrupted = await run_shielded(_finish(deployer, run))
    finally:
        await store.release_lock(record.service, record.environment, record.id)
        await run.close()
    if interrupted:
        raise asyncio.CancelledError()
    return run.record


async def _finish(deployer: Deployer, run: DeploymentRun) -> None:
    record = run.record
    events = await deployer.store.events(record.id)
    last = events[-1][1].message if events else "the start"
    await run.emit(
        EventKind.DECISION,
        f"the control plane running this deployment (pid {record.holder_pid}) is gone; "
        f"recovering it (last step: {last})",
        {"holder_pid": record.holder_pid, "state": record.state.value, "last_event": last},
    )
    if record.state is DeploymentState.PENDING:
        await run.transition(
            DeploymentState.FAILED,
            reason="the control plane crashed before the deployment started; nothing was changed",
        )
        return
    if run.service.platform is not None:  # a managed platform (ECS) ends its own deployments
        reason = f"the control plane crashed at: {last}"
        try:
            platform = deployer.managed_platform(run.service.platform, record.environment)
            await platform.recover(run, reason)
        except Exception as exc:
            log.exception("recovery of %s failed", record.id)
            if not run.state.terminal:
                await _force_failed(run, f"{reason}; recovery failed: {describe_failure(exc)}")
        return
    fleet = run.fleet
    members = await fleet.live()
    wanted = run.service.instances
    new = [
        m
        for m in members
        if m.deployment == record.id
        and m.serving
        and m.router_health is TargetHealth.HEALTHY
        and m.revision == record.revision
    ]
    others = [m for m in members if m.serving and m.deployment != record.id]
    reason = f"the control plane crashed at: {last}"
    if run.previous is None:
        # It crashed before recording what ran before: what still runs (not ours) says it.
        run.previous = dominant_revision([m for m in members if m.deployment != record.id])
    if record.state is DeploymentState.IN_PROGRESS and len(new) >= wanted and not others:
        keep = {m.instance_id for m in new[:wanted]}
        # Orphans: started by the dead process but never admitted (or surplus).
        await run_all(fleet.retire(m) for m in members if m.instance_id not in keep)
        await run.transition(
            DeploymentState.SUCCEEDED, reason="completed after a control-plane crash"
        )
        return
    fleet.touched = True  # something may have changed before the crash: always restore
    try:
        await deployer.load_environment(run)  # restored instances need their secrets too
        await run.roll_back(reason, ended=f"rolled back after a control-plane crash at: {last}")
    except Exception as exc:
        log.exception("recovery of %s failed", record.id)
        if not run.state.terminal:
            await _force_failed(run, f"{reason}; recovery failed: {describe_failure(exc)}")


async def _force_failed(run: DeploymentRun, reason: str) -> None:
    state = run.state
    if state is DeploymentState.IN_PROGRESS:
        await run.transition(DeploymentState.ROLLING_BACK, reason=reason)
    await run.transition(DeploymentState.FAILED, reason=reason)


async def _abandon(
    deployer: Deployer, record: DeploymentRecord, exc: ConfigError
) -> DeploymentRecord:
    """The service or environment left zerodown.yml: record the end, touch nothing."""
    reason = f"the control plane crashed and {exc.reason}; the fleet was left as it is"
    state = record.state
    if state is DeploymentState.IN_PROGRESS:
        record = await deployer.store.update_deployment(
            record.id, state=DeploymentState.ROLLING_BACK, reason=reason
        )
    return await deployer.store.update_deployment(
        record.id,
        state=DeploymentState.FAILED,
        reason=reason,
        finished_at=deployer.clock.time(),
    )
