"""Deployments end to end: real LocalRuntime instances of examples/webapp/app.py behind the real
built-in router on a random loopback port, history in SQLite, closed-loop load while deploying."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.integration.container_fixtures import PodmanApi, webapp_repo

from zerodown.config.loader import LoadedConfig, load_config
from zerodown.config.router import BuiltinRouterConfig, HaproxyRouterConfig
from zerodown.config.runtime import DockerRuntimeConfig
from zerodown.domain.events import DeploymentState, EventKind
from zerodown.domain.records import DeploymentRecord
from zerodown.engine.deployer import Deployer, DeployRequest
from zerodown.engine.recovery import recover_unfinished
from zerodown.loadgen import LoadReport, LoadSpec, run_load
from zerodown.routers.base import Router, RouterBackend
from zerodown.routers.registry import router_backend
from zerodown.runtimes.base import Runtime
from zerodown.runtimes.local import LocalRuntime
from zerodown.runtimes.registry import open_runtime
from zerodown.store.sql import SqlHistoryStore, open_store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
# The stacks the issue 12 tests run on: both routers with processes, and containers (docker
# runtime on Podman's API, images built per revision and pinned by digest) behind the router.
# The first container test of a fresh machine builds the base image (debootstrap, ~1 min) and
# pushes it: more time for those.
ON_EVERY_RUNTIME = pytest.mark.parametrize(
    "stack",
    ["builtin", "haproxy", pytest.param("builtin+docker", marks=pytest.mark.timeout(420))],
    indirect=True,
)

REPO = Path(__file__).resolve().parents[2]
WEBAPP = REPO / "examples" / "webapp"
# Revision "bad" fails its health check; BOOT_<rev> delays that revision's boot.
RUN = (
    'if [ "$ZERODOWN_REVISION" = bad ]; then export FAIL_HEALTH=1; fi; '
    f"exec {sys.executable} app.py"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    """A state dir with a router daemon, a runtime and a store, and a zerodown.yml to write."""

    root: Path
    port: int
    runtime: Runtime
    router: Router
    store: SqlHistoryStore
    backend: str  # the router backend: every test runs on each
    # docker: the runtime's and the image build's settings, and the repo's sha of each tag
    docker: dict[str, Any] | None = None
    shas: dict[str, str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(
        self,
        *,
        instances: int = 1,
        strategy: dict[str, Any] | None = None,
        hooks: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        run: str = RUN,
        container_run: str = "exec python3 app.py",
    ) -> LoadedConfig:
        """Write zerodown.yml (service `api`, environment `prod`) and load it. `run` starts a
        revision's process, `container_run` its container (in the image's workdir)."""
        where: dict[str, Any] = {"workdir": str(WEBAPP), "run": run}
        if self.docker is not None:  # revisions are tags of the repo, built as images
            where = {
                "source": {"repo": str(self.root / "repo"), "path": "."},
                "build": {"image": self.docker["image"]},
                "run": container_run,
            }
        data = {
            "state_dir": "state",
            "router": {"backend": self.backend, "listen": [f"127.0.0.1:{self.port}"]},
            **({"runtime": self.docker["runtime"]} if self.docker is not None else {}),
            "services": {
                "api": {
                    **where,
                    "instances": instances,
                    "drain_timeout": 5,
                    "stop_timeout": 5,
                    "env": env or {},
                    "hooks": hooks or {},
                    "health": {
                        "path": "/health",
                        "healthy_threshold": 1,
                        "unhealthy_threshold": 2,
                        "interval": 0.1,
                        "start_interval": 0.1,
                        "timeout": 2,
                        "deadline": 30,
                    },
                }
            },
            "environments": {"prod": {"strategy": strategy or {}}},
        }
        path = self.root / "zerodown.yml"
        path.write_text(yaml.safe_dump(data))
        return load_config(path, environ={})

    def deployer(self, loaded: LoadedConfig) -> Deployer:
        """A Deployer on this stack."""
        return Deployer(loaded, runtime=self.runtime, router=self.router, store=self.store)

    async def deploy(self, loaded: LoadedConfig, revision: str) -> DeploymentRecord:
        """Deploy `revision` of api to prod."""
        return await self.deployer(loaded).deploy(DeployRequest("api", "prod", revision, "test"))

    async def versions(self, requests: int = 20) -> set[str]:
        """The versions the router serves now, from a few requests."""
        async with httpx.AsyncClient(timeout=10) as client:
            answers = [(await client.get(self.url + "/")).json() for _ in range(requests)]
        return {a["version"] for a in answers}

    def revision_id(self, name: str) -> str:
        """What a deployment records as revision `name` (the repo's sha for docker)."""
        return (self.shas or {}).get(name, name)

    async def running_revisions(self) -> list[str]:
        """Revisions (by name) of the instances whose process runs."""
        names = {sha: name for name, sha in (self.shas or {}).items()}
        running = [i.revision for i in await self.runtime.list("api") if i.state == "running"]
        return sorted(names.get(revision, revision) for revision in running)


@pytest.fixture(params=["builtin", "haproxy"])
async def stack(request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    """The same stack in front of the built-in router and of a real HAProxy (issue 11: every
    strategy and failure trigger works on both)."""
    # A short path: the router's control socket must fit in sun_path (108 bytes).
    root = Path(tempfile.mkdtemp(prefix="zd-e-", dir="/tmp"))
    state = root / "state"
    port = _free_port()
    listen = [f"127.0.0.1:{port}"]
    router_name, _, runtime_name = str(request.param).partition("+")
    settings = (
        HaproxyRouterConfig(listen=listen)
        if router_name == "haproxy"
        else BuiltinRouterConfig(listen=listen)
    )
    backend: RouterBackend = router_backend(settings)
    runtime: Runtime = LocalRuntime(state)
    docker: dict[str, Any] | None = None
    shas: dict[str, str] | None = None
    if runtime_name == "docker":
        api: PodmanApi = request.getfixturevalue("podman_api")
        shas = webapp_repo(root / "repo", request.getfixturevalue("python_image"))
        docker = {
            "runtime": {"backend": "docker", "url": api.url},
            "image": {
                "dockerfile": "Dockerfile",
                "engine": api.url,
                "registry": {"address": api.registry.address},
                "repository": "zerodown-test/stack",  # one repo: the base layer is pushed once
            },
        }
        runtime = open_runtime(DockerRuntimeConfig(url=api.url), state)
    store: SqlHistoryStore | None = None
    try:
        router = await backend.open(state, listen)
        store = open_store(f"sqlite:///{state / 'history.db'}")
        yield Stack(root, port, runtime, router, store, router_name, docker, shas)
    finally:
        for info in await runtime.list():
            await runtime.stop(info.instance_id, timeout=2)
            await runtime.remove(info.instance_id)
        if runtime_name == "docker":
            _remove_kept_containers(request.getfixturevalue("podman_api"), state)
        await backend.stop(state)
        if store is not None:
            await store.close()
        shutil.rmtree(root, ignore_errors=True)


def _remove_kept_containers(api: PodmanApi, state: Path) -> None:
    """Crashed containers the docker runtime keeps for their output (list_exited)."""
    from zerodown.runtimes.docker.containers import scope_of

    label = f"{DockerRuntimeConfig(url=api.url).label_prefix}scope={scope_of(state)}"
    with api.client() as client:
        for container in client.containers.list(all=True, filters={"label": label}):
            container.remove(force=True)


class Load:
    """Closed-loop load (30 clients) through the router while a block runs."""

    def __init__(self, url: str, connections: int = 30) -> None:
        self.spec = LoadSpec(url=url, connections=connections, max_seconds=120, timeout=15)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[LoadReport] | None = None

    async def __aenter__(self) -> Load:
        self.task = asyncio.ensure_future(run_load(self.spec, self.stop))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()

    async def report(self) -> LoadReport:
        assert self.task is not None
        return await self.task


@ON_EVERY_RUNTIME
async def test_one_instance_rolling_surge_deploy_under_load_fails_no_request(
    stack: Stack,
) -> None:
    """One instance, v1 -> v2 under 30 concurrent clients: 0 failed requests, v2 served after."""
    loaded = stack.write_config(instances=1)
    assert (await stack.deploy(loaded, "v1")).state is DeploymentState.SUCCEEDED
    async with Load(stack.url) as load:
        record = await stack.deploy(loaded, "v2")
    report = await load.report()
    assert record.state is DeploymentState.SUCCEEDED, record.reason
    assert report.sent > 100
    assert report.failed == 0, report.failures.most_common(3)
    assert set(report.versions) == {"v1", "v2"}
    assert await stack.versions() == {"v2"}
    assert await stack.running_revisions() == ["v2"]


async def test_two_instance_rolling_deploy_replaces_both(stack: Stack) -> None:
    """Two instances, rolling v1 -> v2: both replaced batch by batch, events in the store."""
    loaded = stack.write_config(instances=2)
    assert (await stack.deploy(loaded, "v1")).state is DeploymentState.SUCCEEDED
    record = await stack.deploy(loaded, "v2")
    assert record.state is DeploymentState.SUCCEEDED, record.reason
    assert record.previous_revision == "v1"
    kinds = [e.kind for _, e in await stack.store.events(record.id)]
    assert kinds.count(EventKind.BATCH_STARTED) == 2
    assert kinds.count(EventKind.TRAFFIC_ADDED) == 2 and kinds.count(EventKind.DRAIN_FINISHED) == 2
    assert await stack.versions() == {"v2"}
    assert await stack.running_revisions() == ["v2", "v2"]


@ON_EVERY_RUNTIME
async def test_unhealthy_revision_rolls_back_under_load_without_a_failed_request(
    stack: Stack,
) -> None:
    """Revision `bad` answers 503 on /health: rolled back, v1 everywhere, 0 failed requests."""
    loaded = stack.write_config(instances=2)
    assert (await stack.deploy(loaded, "v1")).state is DeploymentState.SUCCEEDED
    async with Load(stack.url) as load:
        record = await stack.deploy(loaded, "bad")
    report = await load.report()
    assert record.state is DeploymentState.ROLLED_BACK
    assert "failed its health check" in (record.reason or "")
    assert report.failed == 0, report.failures.most_common(3)
    assert set(report.versions) == {"v1"}
    assert await stack.running_revisions() == ["v1", "v1"]


@ON_EVERY_RUNTIME
async def test_in_place_hooks_run_in_codedeploy_order(stack: Stack) -> None:
    """in-place with every hook appending its name to a file: the file shows CodeDeploy order."""
    journal = stack.root / "hooks.txt"
    names = [
        "BeforeBlockTraffic", "BlockTraffic", "AfterBlockTraffic", "ApplicationStop",
        "BeforeInstall", "Install", "AfterInstall", "ApplicationStart", "ValidateService",
        "BeforeAllowTraffic", "AllowTraffic", "AfterAllowTraffic",
    ]  # fmt: skip
    hooks = {n: f'echo "$ZERODOWN_HOOK $ZERODOWN_REVISION" >> {journal}' for n in names}
    loaded = stack.write_config(instances=1, strategy={"type": "in-place"}, hooks=hooks)
    assert (await stack.deploy(loaded, "v1")).state is DeploymentState.SUCCEEDED
    journal.unlink()
    record = await stack.deploy(loaded, "v2")
    assert record.state is DeploymentState.SUCCEEDED, record.reason
    v2 = stack.revision_id("v2")  # a container's revision is the tag's sha
    assert journal.read_text().split("\n")[:-1] == [f"{n} {v2}" for n in names]
    assert await stack.versions() == {"v2"}


async def test_hooks_run_once_per_instance_unless_scoped_to_the_batch(stack: Stack) -> None:
    """A per-instance hook runs on each instance with its own target; a batch hook runs once."""
    journal = stack.root / "hooks.txt"
    probe = (
        "python3 -c 'import os, urllib.request; "
        'urllib.request.urlopen("http://" + os.environ["ZERODOWN_TARGET"] + "/health")\''
    )
    hooks = {
        "ValidateService": (
            f'{probe} && echo "validate $ZERODOWN_INSTANCE $ZERODOWN_TARGET" >> {journal}'
        ),
        "BeforeInstall": {
            "command": f'echo "install $ZERODOWN_INSTANCE" >> {journal}',
            "scope": "batch",
        },
    }
    loaded = stack.write_config(instances=2, strategy={"type": "in-place", "batch": 2}, hooks=hooks)
    assert (await stack.deploy(loaded, "v1")).state is DeploymentState.SUCCEEDED
    journal.unlink()
    record = await stack.deploy(loaded, "v2")
    assert record.state is DeploymentState.SUCCEEDED, record.reason
    lines = journal.read_text().splitlines()
    running = {i.instance_id: i for i in await stack.runtime.list("api") if i.state == "running"}
    installs = [line.split()[1] for line in lines if line.startswith("install ")]
    assert len(installs) == 1 and sorted(installs[0].split(",")) == sorted(running)
    validated = {line.split()[1]: line.split()[2] for line in lines if line.startswith("validate ")}
    assert validated == {i: f"{info.host}:{info.port}" for i, info in running.items()}


async def test_all_at_once_replaces_every_instance(stack: Stack) -> None:
    """all-at-once: both v1 stop, both v2 start and serve."""
    loaded = stack.write_config(instances=2, strategy={"type": "all-at-once"})
    assert (await stack.deploy(loaded, "v1")).state is DeploymentState.SUCCEEDED
    record = await stack.deploy(loaded, "v2")
    assert record.state is DeploymentState.SUCCEEDED, record.reason
    assert await stack.versions() == {"v2"}
    assert await stack.running_revisions() == ["v2", "v2"]


_DEPLOY_SCRIPT = """
import asyncio, sys
from zerodown.config.loader import load_config
from zerodown.engine.deployer import Deployer, DeployRequest
from zerodown.routers.registry import router_backend
from zerodown.runtimes.registry import open_runtime
from zerodown.store.sql import open_store

async def main():
    loaded = load_config(sys.argv[1], environ={})
    router = await router_backend(loaded.config.router).open(loaded.state_dir, [])
    runtime = open_runtime(loaded.config.runtime, loaded.state_dir)
    deployer = Deployer(loaded, runtime=runtime, router=router, store=open_store(loaded.store_url))
    await deployer.deploy(DeployRequest("api", "prod", sys.argv[2], "crash-test"))

asyncio.run(main())
"""


async def _wait_for_event(
    store: SqlHistoryStore, kind: EventKind, timeout: float, revision: str = "v2"
) -> str:
    """The id of the newest deployment of `revision` once it has an event of `kind` (polled:
    another process writes it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        newest = await store.list_deployments(service="api", limit=1)
        events = await store.events(newest[0].id) if newest else []
        if newest and newest[0].revision == revision and any(e.kind is kind for _, e in events):
            return newest[0].id
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {kind} event within {timeout} s")


@ON_EVERY_RUNTIME
async def test_recovery_after_sigkill_mid_batch_ends_the_deployment_and_traffic_flows(
    stack: Stack,
) -> None:
    """A deploy process SIGKILLed after an instance became healthy: recover_unfinished ends it
    ROLLED_BACK or SUCCEEDED (never in_progress), and no request fails throughout."""
    loaded = stack.write_config(instances=2, env={"BOOT_SECONDS": "0.5"})
    assert (await stack.deploy(loaded, "v1")).state is DeploymentState.SUCCEEDED
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    async with Load(stack.url) as load:
        child = subprocess.Popen(  # noqa: ASYNC220 - a deploy process to SIGKILL, not awaited
            [sys.executable, "-c", _DEPLOY_SCRIPT, str(loaded.path), "v2"],
            env=env,
            stdin=subprocess.DEVNULL,
        )
        try:
            deployment_id = await _wait_for_event(
                stack.store, EventKind.INSTANCE_HEALTHY, 60, stack.revision_id("v2")
            )
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
        assert (await stack.store.get_deployment(deployment_id)).state == "in_progress"
        ended = await recover_unfinished(loaded, stack.runtime, stack.router, stack.store)
        served_after = await stack.versions()
    report = await load.report()
    assert [r.id for r in ended] == [deployment_id]
    final = ended[0]
    print(f"recovered: {final.state}: {final.reason}")
    assert final.state in (DeploymentState.ROLLED_BACK, DeploymentState.SUCCEEDED)
    assert "control-plane crash" in (final.reason or "")
    assert await stack.store.unfinished() == []
    assert report.failed == 0, report.failures.most_common(3)
    wanted = "v1" if final.state is DeploymentState.ROLLED_BACK else "v2"
    assert served_after == {wanted}
    assert await stack.running_revisions() == [wanted, wanted]
