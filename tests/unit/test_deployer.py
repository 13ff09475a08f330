"""The Deployer on fakes: states recorded, whole-fleet rollback on every failure, first deploys,
auto_rollback off, build failure, the lock, cancellation, abort, manual rollback, recovery."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from tests.unit.fakes import Harness, make_loaded

from zerodown.domain.events import DeploymentState
from zerodown.domain.records import LockHolder
from zerodown.engine.deployer import DeployRequest
from zerodown.engine.recovery import recover_unfinished
from zerodown.errors import BuildFailed, DeploymentAborted, LockHeld


async def _on_v1(tmp_path: Path, *, instances: int = 2, **kw: Any) -> Harness:
    harness = Harness(make_loaded(tmp_path, instances=instances, **kw))
    assert (await harness.deploy("v1")).state is DeploymentState.SUCCEEDED
    harness.router.serving_log.clear()
    return harness


def _states(harness: Harness, deployment_id: str) -> list[str]:
    return [e.data["to"] for e in harness.store.event_log[deployment_id] if e.kind.value == "state"]


async def test_success_records_every_state_and_releases_the_lock(tmp_path: Path) -> None:
    """pending -> in_progress -> succeeded, in the record and as STATE events; lock released."""
    harness = await _on_v1(tmp_path)
    record = await harness.deploy("v2")
    assert record.state is DeploymentState.SUCCEEDED
    assert _states(harness, record.id) == ["in_progress", "succeeded"]
    assert record.previous_revision == "v1"
    assert record.started_at is not None and record.finished_at is not None
    assert harness.store.locks == {}
    kinds = harness.store.kinds(record.id)
    assert kinds.index("build") < kinds.index("batch_started") < kinds.index("instance_healthy")


def _break_health(h: Harness) -> None:
    h.prober.unhealthy.add("v2")


def _break_process(h: Harness) -> None:
    h.runtime.exit_revisions.add("v2")


def _break_start(h: Harness) -> None:
    h.runtime.broken_revisions.add("v2")


def _break_router(h: Harness) -> None:
    h.router.fail_add = True


@pytest.mark.parametrize(
    ("breaking", "hooks", "why"),
    [
        (_break_health, None, "failed its health check"),
        (_break_process, None, "exited with code 3"),
        (_break_start, None, "cannot start"),
        (_break_router, None, "the router refused"),
        (None, {"BeforeAllowTraffic": 'test "$ZERODOWN_REVISION" != v2'}, "BeforeAllowTraffic"),
        (
            None,
            {"AfterAllowTraffic": 'test "$ZERODOWN_REVISION $ZERODOWN_BATCH" != "v2 2/2"'},
            "AfterAllowTraffic",
        ),
    ],
)
async def test_a_failure_at_any_step_rolls_the_whole_fleet_back(
    tmp_path: Path, breaking: Any, hooks: dict[str, str] | None, why: str
) -> None:
    """Whatever fails, the fleet ends on v1 everywhere, traffic never stops, reason says why."""
    harness = await _on_v1(tmp_path, hooks=hooks)
    if breaking is not None:
        breaking(harness)
    if breaking is _break_router:
        # The router must accept the rollback's targets: refuse only v2's.
        original = harness.router.add_target

        async def refuse_v2(target: Any, *, healthy: bool = False) -> None:
            harness.router.fail_add = target.revision == "v2"
            await original(target, healthy=healthy)

        harness.router.add_target = refuse_v2  # type: ignore[method-assign]
    record = await harness.deploy("v2")
    assert record.state is DeploymentState.ROLLED_BACK, record.reason
    assert why in (record.reason or "")
    assert "rolled back to v1" in (record.reason or "")
    assert _states(harness, record.id) == ["in_progress", "rolling_back", "rolled_back"]
    assert harness.serving_revisions() == ["v1", "v1"]
    assert harness.running_revisions() == ["v1", "v1"]
    assert min(harness.router.serving_log, default=2) >= 1
    kinds = harness.store.kinds(record.id)
    assert "rollback_started" in kinds and "rollback_finished" in kinds
    assert harness.store.locks == {}


async def test_first_deploy_failure_leaves_nothing_running(tmp_path: Path) -> None:
    """No previous revision: every new instance stops and the reason says nothing runs."""
    harness = Harness(make_loaded(tmp_path, instances=2))
    harness.prober.unhealthy.add("v1")
    record = await harness.deploy("v1")
    assert record.state is DeploymentState.FAILED
    assert (record.reason or "").endswith("nothing was running before; nothing is running now")
    assert harness.running_revisions() == [] and harness.serving_revisions() == []


async def test_auto_rollback_off_fails_and_leaves_the_fleet_as_is(tmp_path: Path) -> None:
    """dev-style: no rollback, FAILED, the reason says so, the unhealthy v2 stays for a look."""
    harness = await _on_v1(tmp_path, instances=1, auto_rollback=False)
    harness.prober.unhealthy.add("v2")
    record = await harness.deploy("v2")
    assert record.state is DeploymentState.FAILED
    assert "auto_rollback is off" in (record.reason or "")
    assert harness.serving_revisions() == ["v1"]
    assert harness.running_revisions() == ["v1", "v2"]


async def test_build_failure_fails_before_anything_is_touched(tmp_path: Path) -> None:
    """BuildFailed: FAILED, 'nothing was changed', no runtime or router call at all."""
    harness = await _on_v1(tmp_path)
    harness.journal.clear()

    async def failing_prepare(*args: Any, **kwargs: Any) -> Any:
        raise BuildFailed("npm run build exited with code 1")

    harness.deployer = harness.make_deployer(harness.loaded, prepare=failing_prepare)
    record = await harness.deploy("v2")
    assert record.state is DeploymentState.FAILED
    assert "npm run build" in (record.reason or "") and "nothing was changed" in (
        record.reason or ""
    )
    assert harness.journal == []


async def test_lock_held_raises_and_starts_nothing(tmp_path: Path) -> None:
    """Another live deployment holds the lock: LockHeld (exit 2), nothing recorded or started."""
    harness = await _on_v1(tmp_path)
    harness.journal.clear()
    before = await harness.store.list_deployments()
    harness.store.locks[("api", "prod")] = LockHolder("other", 1, 1, "host", 0.0)
    with pytest.raises(LockHeld) as refused:
        await harness.deploy("v2")
    assert refused.value.exit_code == 2
    assert await harness.store.list_deployments() == before
    assert harness.journal == []


async def _cancel_in_batch_two(harness: Harness, presses: int) -> Any:
    # v2's first instance passes (batch 1 of 2 completes), the second waits at the gate.
    harness.prober.gates["v2"] = asyncio.Event()
    harness.prober.free_passes["v2"] = 1
    task = asyncio.ensure_future(harness.deploy("v2"))
    await asyncio.wait_for(harness.prober.waiting.wait(), 5)
    if presses > 1:
        # Hold the rollback's v1 start at a gate, and press Ctrl-C again meanwhile.
        harness.prober.waiting.clear()
        harness.prober.gates["v1"] = asyncio.Event()
    task.cancel()
    if presses > 1:
        await asyncio.wait_for(harness.prober.waiting.wait(), 5)
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done()
        harness.prober.gates["v1"].set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    return await harness.store.list_deployments()


@pytest.mark.parametrize("presses", [1, 2])
async def test_cancellation_mid_batch_rolls_back_even_when_pressed_twice(
    tmp_path: Path, presses: int
) -> None:
    """Ctrl-C in batch 2 of 2: v1 everywhere, ROLLED_BACK, then CancelledError; a second
    Ctrl-C during the rollback does not cut it short."""
    harness = await _on_v1(tmp_path, instances=2)
    newest = (await _cancel_in_batch_two(harness, presses))[0]
    assert newest.state is DeploymentState.ROLLED_BACK
    assert "cancelled" in (newest.reason or "")
    assert harness.serving_revisions() == ["v1", "v1"]
    assert harness.running_revisions() == ["v1", "v1"]
    assert min(harness.router.serving_log) >= 1
    assert harness.store.locks == {}


async def test_abort_rolls_back_and_returns_the_record(tmp_path: Path) -> None:
    """Deployer.abort(): the running deploy rolls back and returns normally."""
    harness = await _on_v1(tmp_path)
    harness.prober.gates["v2"] = asyncio.Event()
    task = asyncio.ensure_future(harness.deploy("v2"))
    await asyncio.wait_for(harness.prober.waiting.wait(), 5)
    harness.deployer.abort(reason="aborted by alice")
    record = await asyncio.wait_for(task, 10)
    assert record.state is DeploymentState.ROLLED_BACK
    assert (record.reason or "").startswith("aborted by alice")
    assert harness.serving_revisions() == ["v1", "v1"]


async def test_manual_rollback_goes_to_the_previous_successful_revision(tmp_path: Path) -> None:
    """v1 then v2 succeeded: `rollback` deploys v1 as a rollback-kind deployment."""
    harness = await _on_v1(tmp_path)
    assert (await harness.deploy("v2")).state is DeploymentState.SUCCEEDED
    record = await harness.deployer.rollback("api", "prod", actor="bob")
    assert record.kind == "rollback" and record.revision == "v1"
    assert record.state is DeploymentState.SUCCEEDED
    assert harness.serving_revisions() == ["v1", "v1"]


async def test_rollback_to_a_revision_whose_last_deployment_failed_warns(tmp_path: Path) -> None:
    """`rollback --to v2` where v2 was rolled back: allowed, with a warning as the first
    decision; `--to v1` (it succeeded) has none."""
    harness = await _on_v1(tmp_path)
    _break_health(harness)
    assert (await harness.deploy("v2")).state is DeploymentState.ROLLED_BACK
    harness.prober.unhealthy.clear()
    record = await harness.deployer.rollback("api", "prod", to="v2", actor="bob")
    assert record.state is DeploymentState.SUCCEEDED
    decisions = [e for e in harness.store.event_log[record.id] if e.kind.value == "decision"]
    assert decisions[0].message.startswith("warning: the last deployment of v2 to prod ended ")
    assert "rolled_back" in decisions[0].message
    again = await harness.deployer.rollback("api", "prod", to="v1", actor="bob")
    assert not [e for e in harness.store.event_log[again.id] if "warning" in e.data]


async def test_recovery_rolls_back_a_deployment_whose_process_died(tmp_path: Path) -> None:
    """An in_progress deployment with a dead holder and a half-switched fleet ends ROLLED_BACK,
    with the orphan (started, never admitted) stopped and v1 serving everywhere."""
    harness = await _on_v1(tmp_path)
    harness.prober.gates["v2"] = asyncio.Event()
    task = asyncio.ensure_future(harness.deploy("v2"))
    await asyncio.wait_for(harness.prober.waiting.wait(), 5)
    # Freeze the deployment as a crash would: the task vanishes without its cleanup.
    record = (await harness.store.list_deployments())[0]
    frozen = dict(harness.store.records)
    frozen_lock = dict(harness.store.locks)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    rolled = harness.store.records[record.id]
    assert rolled.state is DeploymentState.ROLLED_BACK
    # Rewind to the frozen moment, with the v2 instance re-created as the crash left it.
    harness.store.records = frozen
    dead = next(iter(frozen_lock.values()))
    harness.store.locks = {("api", "prod"): LockHolder(dead.deployment_id, -1, 0, "h", 0.0)}
    # A pid above pid_max: no such process can exist.
    harness.store.records[record.id] = replace(record, holder_pid=2**22 + 12345)
    harness.prober.gates.clear()
    await harness.runtime.start(
        harness.deployer.fleet("api", "prod", record.id, None).instance_spec(
            _Release("v2", tmp_path), "api-prod-v2-dead"
        )
    )
    ended = await recover_unfinished(
        harness.loaded, harness.runtime, harness.router, harness.store, prober=harness.prober
    )
    assert [r.state for r in ended] == [DeploymentState.ROLLED_BACK]
    assert "control-plane crash" in (ended[0].reason or "")
    assert harness.serving_revisions() == ["v1", "v1"]
    assert harness.running_revisions() == ["v1", "v1"]
    assert await harness.store.unfinished() == []


class _Release:
    def __init__(self, sha: str, path: Path) -> None:
        self.sha, self.path = sha, path
        self.image: str | None = None


class _Collector:
    def __init__(self) -> None:
        self.events: list[Any] = []

    async def on_event(self, event: Any) -> None:
        self.events.append(event)


async def test_observers_get_every_event_in_store_order_and_hooks_see_zerodown_env(
    tmp_path: Path,
) -> None:
    """An observer sees exactly the store's events in the same order; hooks get ZERODOWN_*."""
    check = (
        'test "$ZERODOWN_REVISION" = v1 || { test "$ZERODOWN_PREVIOUS_REVISION" = v1 && '
        'test "$ZERODOWN_STRATEGY" = rolling && test "$ZERODOWN_SERVICE/$ZERODOWN_ENVIRONMENT" '
        '= api/prod && test -d "$ZERODOWN_RELEASE_DIR" && test -n "$ZERODOWN_DEPLOYMENT_ID"; }'
    )
    harness = await _on_v1(tmp_path, hooks={"BeforeInstall": check})
    collector = _Collector()
    harness.deployer = harness.make_deployer(harness.loaded, observers=[collector])
    record = await harness.deploy("v2")
    assert record.state is DeploymentState.SUCCEEDED, record.reason
    assert collector.events == harness.store.event_log[record.id]
    assert "hook_finished" in harness.store.kinds(record.id)


async def test_wait_for_lock_proceeds_once_the_holder_releases_it(tmp_path: Path) -> None:
    """deploy(wait_for_lock=...) polls while another deployment holds the lock, then runs."""
    harness = await _on_v1(tmp_path)
    harness.store.locks[("api", "prod")] = LockHolder("other", 1, 1, "host", 0.0)

    async def release_soon() -> None:
        await asyncio.sleep(0.3)
        await harness.store.release_lock("api", "prod", "other")

    releaser = asyncio.ensure_future(release_soon())
    record = await harness.deployer.deploy(
        DeployRequest("api", "prod", "v2", "test"), wait_for_lock=10
    )
    await releaser
    assert record.state is DeploymentState.SUCCEEDED
    assert harness.serving_revisions() == ["v2", "v2"]


async def test_an_abort_of_everything_ends_a_deploy_still_waiting_for_its_lock(
    tmp_path: Path,
) -> None:
    """serve stopping aborts every deployer: one waiting for a lock that another process holds
    gives up at once (DeploymentAborted), with nothing recorded or started."""
    harness = await _on_v1(tmp_path)
    harness.journal.clear()
    before = await harness.store.list_deployments()
    harness.store.locks[("api", "prod")] = LockHolder("other", 1, 1, "host", 0.0)
    request = DeployRequest("api", "prod", "v2", "test")
    waiting = asyncio.ensure_future(harness.deployer.deploy(request, wait_for_lock=60))
    await asyncio.wait_for(harness.store.lock_refused.wait(), 5)  # it waits for the lock now
    assert not waiting.done()
    harness.deployer.abort(reason="aborted: serve stopped")
    with pytest.raises(DeploymentAborted, match="while it waited for the lock"):
        await asyncio.wait_for(waiting, 5)
    assert await harness.store.list_deployments() == before
    assert harness.journal == []
