"""Environments of one service on one router: each on its own address, with the real router
daemon (one and two workers) and real app processes of examples/webapp/app.py.

Deploying v2 to `canary` leaves `prod` serving v1 (each address answers with its own revision),
and a running router gains the address of an environment added to zerodown.yml without a
restart and without one failed request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from zerodown.config.loader import LoadedConfig, load_config
from zerodown.control_plane import ControlPlane
from zerodown.domain.events import DeploymentState
from zerodown.engine.deployer import DeployRequest
from zerodown.loadgen import LoadSpec, run_load
from zerodown.routers.builtin.client import BuiltinRouter
from zerodown.routers.builtin.pool import stop_pool, worker_dirs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

WEBAPP = Path(__file__).resolve().parents[2] / "examples" / "webapp"


def _free_port_pair() -> int:
    """A port p with p and p + 1 free right now (the second environment's default is p + 1)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two adjacent free ports in 50 tries")


@dataclass
class Project:
    """A zerodown.yml with service `api` and the given environments, in a short /tmp path."""

    root: Path
    port: int  # router.listen's port

    def write(self, environments: dict[str, Any], workers: int = 1) -> LoadedConfig:
        health = {"path": "/health", "healthy_threshold": 1, "interval": 0.1}
        data = {
            "state_dir": "state",
            "router": {"listen": f"127.0.0.1:{self.port}", "workers": workers},
            "services": {
                "api": {
                    "workdir": str(WEBAPP),
                    "run": f"exec {sys.executable} app.py",
                    "instances": 1,
                    "drain_timeout": 5,
                    "stop_timeout": 5,
                    "health": {**health, "start_interval": 0.1, "timeout": 2, "deadline": 30},
                }
            },
            "environments": environments,
        }
        path = self.root / "zerodown.yml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return load_config(path, environ={})


@pytest.fixture
async def project() -> AsyncIterator[Project]:
    # A short path: the router's control socket must fit in sun_path (108 bytes).
    root = Path(tempfile.mkdtemp(prefix="zd-r-", dir="/tmp"))
    try:
        yield Project(root, _free_port_pair())
    finally:
        state = root / "state"
        with contextlib.suppress(Exception):
            loaded = load_config(root / "zerodown.yml", environ={})
            plane = await ControlPlane.open(loaded, recover=False)
            try:
                await plane.stop_everything()
            finally:
                await plane.close()
        pids = []
        for directory in worker_dirs(state):
            with contextlib.suppress(Exception):
                pids.append(int((await BuiltinRouter(directory).ping())["pid"]))
        await stop_pool(state, timeout=10)
        for pid in pids:  # stop_pool failed: nothing may outlive the test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


async def _deploy(plane: ControlPlane, environment: str, revision: str) -> None:
    record = await plane.deployer().deploy(DeployRequest("api", environment, revision, "test"))
    assert record.state is DeploymentState.SUCCEEDED, record.reason


async def _versions(address: str, requests: int = 20) -> set[str]:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        answers = [(await client.get(f"http://{address}/")).json() for _ in range(requests)]
    return {a["version"] for a in answers}


async def test_v2_on_canary_leaves_prod_on_v1_each_on_its_own_address(project: Project) -> None:
    loaded = project.write({"prod": {}, "canary": {}})  # canary: router.listen's port + 1
    prod, canary = f"127.0.0.1:{project.port}", f"127.0.0.1:{project.port + 1}"
    plane = await ControlPlane.open(loaded, recover=False)
    try:
        await _deploy(plane, "prod", "v1")
        await _deploy(plane, "canary", "v1")
        await _deploy(plane, "canary", "v2")
        assert await _versions(prod) == {"v1"}
        assert await _versions(canary) == {"v2"}
        routes = {s.route.service: s.route.listen for s in await plane.router.status()}
        assert routes == {"api.prod": (prod,), "api.canary": (canary,)}
    finally:
        await plane.close()


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_running_router_gains_a_new_environments_address_without_failed_requests(
    project: Project, workers: int
) -> None:
    loaded = project.write({"prod": {}}, workers=workers)
    prod, canary = f"127.0.0.1:{project.port}", f"127.0.0.1:{project.port + 1}"
    plane = await ControlPlane.open(loaded, recover=False)
    try:
        await _deploy(plane, "prod", "v1")
        pids = [int((await BuiltinRouter(d).ping())["pid"]) for d in worker_dirs(loaded.state_dir)]
        assert len(pids) == workers
    finally:
        await plane.close()
    stop = asyncio.Event()
    spec = LoadSpec(url=f"http://{prod}", connections=8, max_seconds=60, timeout=15)
    load = asyncio.ensure_future(run_load(spec, stop))
    try:
        await _versions(prod, 5)  # the load runs against a serving router
        grown = project.write({"prod": {}, "canary": {}}, workers=workers)
        plane = await ControlPlane.open(grown, recover=False)
        try:
            for directory in worker_dirs(grown.state_dir):
                info = await BuiltinRouter(directory).ping()
                assert canary in info["listen"] and prod in info["listen"]
            await _deploy(plane, "canary", "v2")
            assert await _versions(canary) == {"v2"}
        finally:
            await plane.close()
    finally:
        stop.set()
        report = await load
    after = [int((await BuiltinRouter(d).ping())["pid"]) for d in worker_dirs(grown.state_dir)]
    assert after == pids  # no restart: the same processes bound the new address
    assert report.sent > 50 and report.failed == 0, report.failures.most_common(3)
    assert set(report.versions) == {"v1"}  # prod never saw the canary's revision


async def test_an_address_bound_at_runtime_survives_a_hitless_restart() -> None:
    """The `listen` op's socket goes to the successor with the others (SCM_RIGHTS)."""
    from zerodown.routers.base import RouteSpec
    from zerodown.routers.builtin.client import restart_router, start_router_process, stop_router

    state = Path(tempfile.mkdtemp(prefix="zd-r-", dir="/tmp")) / "state"
    try:
        first = str((await start_router_process(state, ["127.0.0.1:0"]))["listen"][0])
        router = BuiltinRouter(state)
        port = _free_port_pair()
        added = f"127.0.0.1:{port}"
        assert (await router.listen([added, first]))["added"] == [added]  # `first`: already had
        await router.apply_route(RouteSpec(service="api.canary", listen=(added,)))
        info = await restart_router(state)
        assert info["listen"] == [first, added]
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
            bound = await client.get(f"http://{added}/")
            other = await client.get(f"http://{first}/")
        assert bound.status_code == 503  # the canary's route, which has no target yet
        assert other.status_code == 404 and other.json()["error"] == "no route"
    finally:
        await stop_router(state, timeout=10)
        shutil.rmtree(state.parent, ignore_errors=True)
