"""`router.workers: 2`: two real router daemons on one port (SO_REUSEPORT) behind one client.

The workers are started the way the control plane starts them (`ensure_pool`); upstreams are
examples/webapp/app.py subprocesses and every request goes over real sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from zerodown.config.loader import load_config
from zerodown.control_plane import ControlPlane
from zerodown.domain.events import DeploymentState
from zerodown.engine.deployer import DeployRequest
from zerodown.loadgen import LoadReport, LoadSpec, run_load
from zerodown.routers.base import Router, RouteSpec
from zerodown.routers.builtin.client import BuiltinRouter
from zerodown.routers.builtin.pool import (
    WorkerPoolRouter,
    ensure_pool,
    restart_pool,
    running_workers,
    stop_pool,
    worker_state_dir,
)

from router_fixtures import APP, WebApp, alive, free_port, start_webapp, wait_until  # isort: skip

pytestmark = pytest.mark.timeout(120)
WORKERS = 2


@dataclass
class Pool:
    """A router pool of WORKERS daemons and the upstreams of one test; all stopped at its end."""

    state_dir: Path
    address: str = ""
    pids: list[int] = field(default_factory=list)
    apps: list[WebApp] = field(default_factory=list)

    @property
    def router(self) -> WorkerPoolRouter:
        """The fan-out client over every worker."""
        return WorkerPoolRouter(self.state_dir, WORKERS)

    def worker(self, index: int) -> BuiltinRouter:
        """A client for one worker alone."""
        return BuiltinRouter(worker_state_dir(self.state_dir, index))

    async def start(self) -> None:
        """Start the workers on a free port (worker 0 first resolves it, the rest join)."""
        infos = await ensure_pool(self.state_dir, ["127.0.0.1:0"], WORKERS, grace=20.0)
        self.pids = [int(info["pid"]) for info in infos]
        self.address = str(infos[0]["listen"][0])

    async def serve(self, *names: str) -> list[WebApp]:
        """Start upstreams and route service `web` to them, healthy at once."""
        apps = list(await asyncio.gather(*(start_webapp(name) for name in names)))
        self.apps += apps
        await self.router.apply_route(RouteSpec(service="web", drain_timeout=15))
        for app in apps:
            await self.router.add_target(app.target(), healthy=True)
        return apps

    async def close(self) -> None:
        """Stop the workers (SIGKILL what is left) and kill the upstreams."""
        with contextlib.suppress(Exception):
            await stop_pool(self.state_dir, timeout=10.0)
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for app in self.apps:
            if app.process.poll() is None:
                app.kill()


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    # A short path: worker sockets (`router-1/router/control.sock`) must fit in sun_path.
    root = Path(tempfile.mkdtemp(prefix="zd-p-", dir="/tmp"))
    pool = Pool(root / "state")
    try:
        await pool.start()
        yield pool
    finally:
        await pool.close()
        shutil.rmtree(root, ignore_errors=True)


class Load:
    """Closed-loop load (keep-alive clients, 10 % slow requests) while a block runs."""

    def __init__(self, address: str, connections: int = 20) -> None:
        self.spec = LoadSpec(
            url=f"http://{address}",
            connections=connections,
            slow_fraction=0.1,
            slow_path="/slow?seconds=0.5",
            max_seconds=60,
            timeout=15,
        )
        self.stop = asyncio.Event()
        self.task: asyncio.Task[LoadReport] | None = None

    async def __aenter__(self) -> Load:
        self.task = asyncio.ensure_future(run_load(self.spec, self.stop))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()

    async def report(self) -> LoadReport:
        """The load's report once it has stopped."""
        assert self.task is not None
        return await self.task


async def _requests_per_worker(pool: Pool) -> list[int]:
    totals = await asyncio.gather(*(pool.worker(k).metrics() for k in range(WORKERS)))
    return [sum(int(t.get("requests", 0)) for t in m["totals"]) for m in totals]


async def test_both_workers_get_connections_and_every_request_succeeds(pool: Pool) -> None:
    """60 requests, each on its own connection: all 200, both workers count some, the merged
    metrics count all 60, and the pool is a `Router`."""
    assert isinstance(pool.router, Router)
    await pool.serve("a")
    limits = httpx.Limits(max_keepalive_connections=0)  # a new connection per request
    async with httpx.AsyncClient(base_url=f"http://{pool.address}", limits=limits) as client:
        answers = [await client.get("/") for _ in range(60)]
    assert [r.status_code for r in answers] == [200] * 60
    per_worker = await _requests_per_worker(pool)
    assert all(n > 0 for n in per_worker), per_worker
    assert sum(per_worker) == 60
    merged = await pool.router.metrics()
    assert sum(int(t.get("requests", 0)) for t in merged["totals"]) == 60
    info = await pool.router.ping()
    assert [w["pid"] for w in info["workers"]] == pool.pids
    assert all(w["listen"] == [pool.address] for w in info["workers"])


async def test_weights_and_new_targets_reach_every_worker(pool: Pool) -> None:
    """add_target and set_pool_weights through the pool: each worker's own status agrees."""
    a, b = await pool.serve("a", "b")
    await pool.router.add_target(a.target(pool="old"), healthy=True)
    await pool.router.set_pool_weights("web", {"old": 0, "r1": 100})
    c = (await pool.serve("c"))[0]
    views = []
    for k in range(WORKERS):
        [route] = await pool.worker(k).status("web")
        targets = {t.spec.target_id: t.spec.pool for t in route.targets}
        views.append((targets, dict(route.pools)))
    assert views == [({a.name: "old", b.name: "r1", c.name: "r1"}, {"old": 0, "r1": 100})] * WORKERS
    [merged] = await pool.router.status("web")
    assert ({t.spec.target_id: t.spec.pool for t in merged.targets}, merged.pools) == views[0]
    assert merged.healthy_count == 3


async def test_drain_under_load_fails_nothing_and_removes_the_target_everywhere(
    pool: Pool,
) -> None:
    """20 clients (10 % slow) while `a` drains on both workers: 0 failed, 0 forced, `a` gone."""
    await pool.serve("a", "b")
    async with Load(pool.address) as load:
        await _until_answered(pool, 100)
        drained = await pool.router.drain_target("web", "a", timeout=10)
        await _until_answered(pool, 200)
    report = await load.report()
    assert report.failed == 0, report.failures.most_common(3)
    assert drained.target_id == "a" and drained.forced == 0
    for k in range(WORKERS):
        [route] = await pool.worker(k).status("web")
        assert {t.spec.target_id for t in route.targets} == {"b"}


async def test_hitless_restart_of_the_pool_under_load_fails_nothing(pool: Pool) -> None:
    """Every worker hands its socket to a successor, in turn, under 20 clients: 0 failed."""
    await pool.serve("a", "b")
    async with Load(pool.address) as load:
        await _until_answered(pool, 100)
        infos = await restart_pool(pool.state_dir)
        await _until_answered(pool, 100)  # the new workers serve (their counters start at 0)
    report = await load.report()
    new_pids = [int(info["pid"]) for info in infos]
    assert len(new_pids) == WORKERS and not set(new_pids) & set(pool.pids)
    assert report.failed == 0, report.failures.most_common(3)
    for pid in pool.pids:
        await wait_until(lambda pid=pid: not alive(pid), 30.0, f"old worker {pid} to exit")
    pool.pids = new_pids
    [route] = await pool.router.status("web")
    assert {t.spec.target_id for t in route.targets} == {"a", "b"}


async def test_stop_leaves_no_worker_process(pool: Pool) -> None:
    """stop_pool stops every worker: none of their pids is alive afterwards."""
    assert running_workers(pool.state_dir) == WORKERS
    stopped = await stop_pool(pool.state_dir, timeout=10.0)
    assert sorted(stopped) == sorted(pool.pids)
    for pid in pool.pids:
        assert not alive(pid), pid
    assert running_workers(pool.state_dir) == 1  # nothing beyond worker 0's (stopped) slot


async def _until_answered(pool: Pool, count: int) -> None:
    """Wait (bounded) until the workers together answered `count` more requests than now."""
    start = sum(await _requests_per_worker(pool))
    for _ in range(600):  # 30 s at most
        if sum(await _requests_per_worker(pool)) >= start + count:
            return
        await asyncio.sleep(0.05)  # other processes' counters: nothing to await but a poll
    raise AssertionError(f"the pool did not answer {count} requests within 30 s")


@pytest.mark.slow
async def test_rolling_deploy_through_the_control_plane_with_two_workers_fails_nothing() -> None:
    """`router: {workers: 2}`: ControlPlane.open starts both workers, a rolling v1 -> v2 deploy
    under 20 clients loses no request, and `stop_everything` stops every worker."""
    root = Path(tempfile.mkdtemp(prefix="zd-p-", dir="/tmp"))
    port = free_port()
    health = {"path": "/health", "healthy_threshold": 1, "interval": 0.1, "start_interval": 0.1}
    config = {
        "state_dir": "state",
        "router": {"listen": [f"127.0.0.1:{port}"], "workers": WORKERS},
        "services": {
            "api": {
                "workdir": str(APP.parent),
                "run": f"exec {sys.executable} app.py",
                "instances": 1,
                "drain_timeout": 5,
                "stop_timeout": 5,
                "health": {**health, "timeout": 2, "deadline": 30},
            }
        },
        "environments": {"prod": {}},
    }
    (root / "zerodown.yml").write_text(yaml.safe_dump(config))
    loaded = load_config(root / "zerodown.yml", environ={})
    plane = await ControlPlane.open(loaded, recover=False)
    pids: list[int] = []
    try:
        assert isinstance(plane.router, WorkerPoolRouter)
        pids = [int(w["pid"]) for w in (await plane.router.ping())["workers"]]
        assert len(pids) == WORKERS
        request = DeployRequest("api", "prod", "v1", "test")
        assert (await plane.deployer().deploy(request)).state is DeploymentState.SUCCEEDED
        async with Load(f"127.0.0.1:{port}") as load:
            record = await plane.deployer().deploy(DeployRequest("api", "prod", "v2", "test"))
        report = await load.report()
        assert record.state is DeploymentState.SUCCEEDED, record.reason
        assert report.sent > 100 and report.failed == 0, report.failures.most_common(3)
        assert set(report.versions) == {"v1", "v2"}
        answered = [await w.metrics() for w in plane.router.workers]
        assert all(sum(t.get("requests", 0) for t in m["totals"]) > 0 for m in answered)
        await plane.stop_everything()
        assert not any(alive(pid) for pid in pids)
    finally:
        with contextlib.suppress(Exception):
            await plane.stop_everything()
        await plane.close()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


def test_cli_starts_restarts_and_stops_every_worker() -> None:
    """`zerodown router start --workers 2`, `status`, `restart` (each worker in turn), `stop`."""
    from typer.testing import CliRunner

    from zerodown.cli.router import router_app

    root = Path(tempfile.mkdtemp(prefix="zd-p-", dir="/tmp"))
    where = ["--state-dir", str(root / "state")]
    cli = CliRunner()
    try:
        started = cli.invoke(
            router_app, ["start", *where, "--listen", "127.0.0.1:0", "--workers", "2"]
        )
        assert started.exit_code == 0, started.output
        assert started.output.count("listening on") == WORKERS, started.output
        assert running_workers(root / "state") == WORKERS
        status = cli.invoke(router_app, ["status", *where])
        assert status.exit_code == 0 and status.output.count("router pid") == WORKERS, status.output
        restarted = cli.invoke(router_app, ["restart", *where])
        assert restarted.exit_code == 0 and restarted.output.count("took over") == WORKERS
        stopped = cli.invoke(router_app, ["stop", *where])
        assert stopped.exit_code == 0 and "stopped" in stopped.output, stopped.output
        assert running_workers(root / "state") == 1
        assert "router answers" in cli.invoke(router_app, ["status", *where]).output
    finally:
        cli.invoke(router_app, ["stop", *where])
        shutil.rmtree(root, ignore_errors=True)


async def test_a_smaller_pool_stops_the_workers_beyond_it(pool: Pool) -> None:
    """ensure_pool with fewer workers than run stops the extra ones (their tables would go
    stale) and keeps the others: pool of 3, then of 2."""
    three = await ensure_pool(pool.state_dir, ["127.0.0.1:0"], 3, grace=5.0)
    pool.pids = [int(info["pid"]) for info in three]
    assert pool.pids[:WORKERS] == [int(w["pid"]) for w in (await pool.router.ping())["workers"]]
    two = await ensure_pool(pool.state_dir, ["127.0.0.1:0"], WORKERS, grace=5.0)
    assert [int(info["pid"]) for info in two] == pool.pids[:WORKERS]
    assert not alive(pool.pids[2])
    assert running_workers(pool.state_dir) == WORKERS
