"""How the fleet puts instances in router pools, and what it reads back from where."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.unit.fakes import Harness, make_loaded

from zerodown.domain.events import DeploymentState, EventKind
from zerodown.engine.fleet import Fleet, run_all
from zerodown.routers.base import TargetSpec


class NullSink:
    """An EventSink that forgets every event."""

    async def emit(self, kind: EventKind, message: str, data: dict[str, Any] | None = None) -> None:
        return None

    def emit_soon(self, kind: EventKind, message: str, data: dict[str, Any] | None = None) -> None:
        return None


def _fleet(harness: Harness, deployment_id: str) -> Fleet:
    return harness.deployer.fleet("api", "prod", deployment_id, NullSink())


async def test_members_name_their_deployment_from_the_runtime_not_the_router(
    tmp_path: Path,
) -> None:
    """After a deploy, a fleet opened anew (a restarted control plane) finds each instance's
    deployment in the runtime's labels; the router's targets carry only a pool and a revision,
    and a target the runtime does not know has no deployment."""
    harness = Harness(make_loaded(tmp_path, instances=2))
    record = await harness.deploy("v1")
    assert record.state is DeploymentState.SUCCEEDED, record.reason
    route = (await harness.router.status("api.prod"))[0]
    assert all(set(t.spec.to_dict()) == {
        "service", "target_id", "host", "port", "revision", "pool"
    } for t in route.targets)  # fmt: skip
    await harness.router.add_target(TargetSpec("api.prod", "stray", "127.0.0.1", 1, "v0", "x"))
    members = {m.instance_id: m for m in await _fleet(harness, "later").members()}
    assert {m.deployment for i, m in members.items() if i != "stray"} == {record.id}
    assert (members["stray"].deployment, members["stray"].revision) == (None, "v0")


async def test_instances_join_the_serving_pool_or_one_new_pool_when_none_serves(
    tmp_path: Path,
) -> None:
    """Rolling-type admits join the pool with live traffic; when every pool is out of rotation
    (only warm leftovers), concurrent admits agree on one new pool and weigh it, the warm pool
    stays at 0."""
    harness = Harness(make_loaded(tmp_path, instances=2))
    assert (await harness.deploy("v1")).state is DeploymentState.SUCCEEDED
    [v1_pool] = {t.spec.pool for t in (await harness.router.status("api.prod"))[0].targets}
    await harness.router.set_pool_weights("api.prod", {v1_pool: 0})  # v1 kept warm
    fleet = _fleet(harness, "d2-0000000000")
    release = _Release("v2", tmp_path)
    launched = await run_all(fleet.launch(release) for _ in range(2))
    admitted = await run_all(fleet.admit(m) for m in launched)
    [new_pool] = {m.pool for m in admitted}
    assert new_pool == fleet.new_pool("v2") != v1_pool
    [route] = await harness.router.status("api.prod")
    assert route.pools == {v1_pool: 0, new_pool: 100}
    assert harness.serving_revisions() == ["v2", "v2"]
    third = await fleet.admit(await fleet.launch(release))
    assert third.pool == new_pool  # the pool that serves now


class _Release:
    """A prepared release as the fleet needs it."""

    def __init__(self, sha: str, path: Path) -> None:
        self.sha, self.path, self.image = sha, path, None
