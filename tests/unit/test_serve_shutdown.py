"""How `zerodown serve` aborts the deployments it runs when it stops
(`ControlPlaneServer.abort_running`), on the engine's fakes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.unit.fakes import Harness, make_loaded

from zerodown.control_plane import ControlPlane
from zerodown.domain.events import DeploymentState
from zerodown.domain.records import DeploymentRecord, LockHolder
from zerodown.engine.deployer import DeployRequest
from zerodown.server.socket_api import ControlPlaneServer


async def test_a_deployment_waiting_for_its_lock_when_serve_stops_is_aborted_once_it_starts(
    tmp_path: Path,
) -> None:
    """serve stops while its deployment waits for the lock: the abort is not lost (before, the
    deployment went on once it had the lock, and serve waited for it until its time was up);
    once the lock comes free and the deployment starts, it is aborted (before or after it
    started v2, which is never found healthy) and the fleet serves v1."""
    harness = Harness(make_loaded(tmp_path, instances=2))
    assert (await harness.deploy("v1")).state is DeploymentState.SUCCEEDED
    plane = ControlPlane(harness.loaded, harness.runtime, harness.router, harness.store)
    server = ControlPlaneServer(plane)
    harness.prober.gates["v2"] = asyncio.Event()  # never set: v2 is never found healthy
    harness.store.locks[("api", "prod")] = LockHolder("other", 1, 1, "host", 0.0)

    async def run() -> DeploymentRecord:  # as both servers do: in `running` while it runs
        server.running[("api", "prod")] = harness.deployer
        try:
            request = DeployRequest("api", "prod", "v2", "test")
            return await harness.deployer.deploy(request, wait_for_lock=30)
        finally:
            del server.running[("api", "prod")]

    deployment = asyncio.ensure_future(run())
    await asyncio.wait_for(harness.store.lock_refused.wait(), 5)
    stopping = asyncio.ensure_future(server.abort_running("aborted: serve stopped", timeout=5))
    await asyncio.sleep(0)  # abort_running has made its first pass: the deployment waits still
    await harness.store.release_lock("api", "prod", "other")

    try:
        assert await asyncio.wait_for(stopping, 10) == 1
        assert deployment.done(), "serve's wait for its deployment ran out: the abort was lost"
    finally:
        if not deployment.done():  # end it anyway: a test leaves nothing running
            harness.deployer.abort(reason="the test ended")
            await asyncio.wait_for(deployment, 10)
    record = deployment.result()
    assert record.state in (DeploymentState.FAILED, DeploymentState.ROLLED_BACK), record.reason
    assert (record.reason or "").startswith("aborted: serve stopped"), record.reason
    assert harness.serving_revisions() == ["v1", "v1"]
