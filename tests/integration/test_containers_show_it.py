"""Issue 12's "Show it", on containers: a FastAPI app with no Dockerfile, end to end.

A tiny FastAPI service (requirements.txt pinning the fastapi/uvicorn versions of this .venv,
their wheels beside it) in a git repo, deployed with the `zerodown` command line: every
revision is built from the `fastapi` preset (on the base the image tests build, cached),
pushed to a local registry and run by the docker runtime on Podman's Docker API, pinned by the
registry's manifest digest, behind the real built-in router on a random loopback port:
1. v1 -> v2, rolling, under closed-loop load: 0 failed requests;
2. a v3 whose /health answers 503 is rolled back: the fleet stays on v2, 0 failed requests;
3. `docker inspect` of a running container shows the image pinned by v2's manifest digest (the
   registry's Docker-Content-Digest of the v2.0.0 tag) and zerodown's labels;
4. `kill -9` of a `zerodown deploy` while v4's containers boot: the next `zerodown status`
   re-adopts the containers and ends the deployment; the containers are the fleet.
Each prints what it measured. The tests share one service (module scope) and bring the fleet
to the revision they start from themselves, so each also runs alone.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from benchmarks.sample_images import commit_all, fastapi_service, git, init_repo
from tests.integration.container_fixtures import PodmanApi, free_port
from tests.integration.test_deploy_local import Stack

from zerodown.config.router import BuiltinRouterConfig
from zerodown.config.runtime import DockerRuntimeConfig
from zerodown.domain.events import DeploymentState, EventKind
from zerodown.loadgen import LoadReport, LoadSpec, run_load
from zerodown.routers.registry import router_backend
from zerodown.runtimes.docker.containers import scope_of
from zerodown.runtimes.registry import open_runtime
from zerodown.store.sql import open_store

from haproxy_show_fixtures import (  # isort: skip - sibling module
    output_of,
    run_zerodown,
    spawn_zerodown,
    wait_for_event,
)


pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

REPOSITORY = "zerodown-test/show-it"
LABELS = "io.zerodown."  # DockerRuntimeConfig's default label prefix
INSTANCES = 2
CONNECTIONS = 24  # the issue asks for >= 20
# The app: VERSION at `/`, /health; v3 answers 503 there, v4 boots for a second and a half.
APP = """\
import os
import time

from fastapi import FastAPI, Response

VERSION = "{version}"
if VERSION == "v4":
    time.sleep(1.5)  # a slow boot: the control plane is killed while it lasts
app = FastAPI()


@app.get("/")
def index() -> dict[str, str]:
    return {{"version": VERSION, "uid": str(os.getuid())}}


@app.get("/health")
def health(response: Response) -> dict[str, str]:
    if VERSION == "v3":
        response.status_code = 503
        return {{"status": "broken"}}
    return {{"status": "ok"}}
"""


@dataclass(frozen=True)
class Service:
    """The FastAPI service's repo and zerodown.yml in `root`, and the sha of each version."""

    root: Path
    port: int
    api: PodmanApi
    shas: dict[str, str]  # v1 .. v4 -> sha (tagged v1.0.0 .. v4.0.0)

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def label(self) -> str:
        """The label filter that finds this state dir's containers."""
        return f"{LABELS}scope={scope_of(self.state)}"

    def containers(self, *, everything: bool = False) -> list[dict[str, Any]]:
        """`docker inspect` of the running containers of this state dir (`everything`: also
        stopped ones), through the Docker API."""
        with self.api.client() as client:
            return [
                client.api.inspect_container(c.id)
                for c in client.containers.list(all=everything, filters={"label": self.label})
            ]


@pytest.fixture(scope="module")
def service(podman_api: PodmanApi) -> Iterator[Service]:
    """The repo (four tagged versions, no Dockerfile) and zerodown.yml; the router daemon and
    every container of the state dir are stopped at the end, also when a test failed."""
    root = Path(tempfile.mkdtemp(prefix="zd-c-", dir="/tmp"))  # short: sun_path
    repo = init_repo(root / "repo")
    fastapi_service(repo / "web")
    shas = {}
    for number in range(1, 5):
        version = f"v{number}"
        (repo / "web" / "main.py").write_text(APP.format(version=version))
        shas[version] = commit_all(repo, version)
        git(repo, "tag", f"{version}.0.0")
    assert not (repo / "web" / "Dockerfile").exists()
    port = free_port()
    config = {
        "state_dir": "state",
        "router": {"backend": "builtin", "listen": [f"127.0.0.1:{port}"]},
        "runtime": {"backend": "docker", "url": podman_api.url},
        "services": {
            "api": {
                "source": {"repo": "repo", "path": "web"},
                "build": {
                    "image": {
                        "preset": "fastapi",
                        "repository": REPOSITORY,
                        "registry": {"address": podman_api.registry.address},
                        "engine": podman_api.url,
                    }
                },
                "instances": INSTANCES,
                "drain_timeout": 5,
                "stop_timeout": 5,
                "health": {
                    "path": "/health",
                    "healthy_threshold": 1,
                    "unhealthy_threshold": 2,
                    "interval": 0.2,
                    "start_interval": 0.1,
                    "timeout": 2,
                    "deadline": 30,
                },
            }
        },
        "environments": {"prod": {"strategy": {"type": "rolling"}}},
        "server": {"listen": f"127.0.0.1:{free_port()}"},
    }
    (root / "zerodown.yml").write_text(yaml.safe_dump(config))
    made = Service(root, port, podman_api, shas)
    try:
        yield made
    finally:
        backend = router_backend(BuiltinRouterConfig(listen=[f"127.0.0.1:{port}"]))
        try:
            asyncio.run(backend.stop(made.state))
        finally:
            with podman_api.client() as client:
                for container in client.containers.list(all=True, filters={"label": made.label}):
                    container.remove(force=True)
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def stack(service: Service) -> AsyncIterator[Stack]:
    """The deploy tests' Stack on the service's state dir (the router daemon started if it is
    not running), to read what runs and what the router serves; the store is closed after."""
    listen = [f"127.0.0.1:{service.port}"]
    router = await router_backend(BuiltinRouterConfig(listen=listen)).open(service.state, listen)
    runtime = open_runtime(DockerRuntimeConfig(url=service.api.url), service.state)
    store = open_store(f"sqlite:///{service.state / 'history.db'}")
    try:
        yield Stack(
            service.root, service.port, runtime, router, store, "builtin", None, service.shas
        )
    finally:
        await store.close()


async def deploy(stack: Stack, version: str, timeout: float = 240) -> tuple[int, str, float]:
    """`zerodown deploy api --env prod --revision <version>.0.0`: exit code, output, seconds."""
    began = time.monotonic()
    code, output = await run_zerodown(
        stack, "deploy", "api", "--env", "prod", "--revision", f"{version}.0.0", timeout=timeout
    )
    return code, output, time.monotonic() - began


async def fleet_on(stack: Stack, version: str) -> None:
    """Bring the fleet to `version` (a deploy only if it is not there already)."""
    if await stack.running_revisions() != [version] * INSTANCES:
        code, output, _ = await deploy(stack, version)
        assert code == 0, output
    assert await stack.running_revisions() == [version] * INSTANCES


class Load:
    """Closed-loop load through the router while a block runs (bounded in time and count)."""

    def __init__(self, url: str) -> None:
        self.spec = LoadSpec(
            url=url, connections=CONNECTIONS, max_seconds=180, max_requests=300_000, timeout=15
        )
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


def _numbers(report: LoadReport) -> str:
    return (
        f"{report.sent} requests in {report.seconds:.1f} s from {CONNECTIONS} connections "
        f"({report.rate:.0f}/s), {report.failed} failed, versions {dict(report.versions)}"
    )


async def test_v1_to_v2_rolling_from_the_fastapi_preset_under_load_fails_no_request(
    stack: Stack,
) -> None:
    """v1 then v2 built from the preset (no Dockerfile), v1 -> v2 rolling under >= 20 closed-loop
    clients: exit 0, 0 failed requests, both versions seen, v2 on every container after."""
    await fleet_on(stack, "v1")
    async with Load(stack.url) as load:
        code, output, seconds = await deploy(stack, "v2")
        await asyncio.sleep(1.0)  # a second of load on v2 alone: a load rate, not a wait
    report = await load.report()
    assert code == 0, output
    assert report.failed == 0, report.failures.most_common(3)
    assert report.sent > 200 and report.seconds >= 3, (report.sent, report.seconds)
    assert set(report.versions) == {"v1", "v2"}
    assert await stack.versions() == {"v2"}
    assert await stack.running_revisions() == ["v2", "v2"]
    print(f"\ncontainers v1 -> v2 (rolling, {seconds:.1f} s): {_numbers(report)}")


async def test_broken_v3_is_rolled_back_under_load_and_the_fleet_stays_on_v2(
    stack: Stack,
) -> None:
    """v3's /health answers 503: `zerodown deploy` exits 1, the deployment is rolled back
    naming the health check, the two v2 containers keep serving, 0 failed requests."""
    await fleet_on(stack, "v2")
    async with Load(stack.url) as load:
        code, output, seconds = await deploy(stack, "v3")
    report = await load.report()
    assert code == 1, output
    [record] = await stack.store.list_deployments(service="api", limit=1)
    assert record.revision == stack.revision_id("v3")
    assert record.state is DeploymentState.ROLLED_BACK, record
    assert "failed its health check" in (record.reason or ""), record.reason
    assert report.failed == 0, report.failures.most_common(3)
    assert set(report.versions) == {"v2"}
    assert await stack.versions() == {"v2"}
    assert await stack.running_revisions() == ["v2", "v2"]
    print(
        f"\ncontainers broken v3 rolled back in {seconds:.1f} s ({record.reason}): "
        f"{_numbers(report)}"
    )


async def test_docker_inspect_shows_the_registry_digest_pinned_and_the_labels(
    stack: Stack, service: Service
) -> None:
    """Each running container's image is `<registry>/<repo>@<digest>`, the digest being the one
    the registry serves for the v2.0.0 tag (not a tag, not the local image id), and it carries
    zerodown's labels and the image's revision label."""
    await fleet_on(stack, "v2")
    digest = service.api.registry.manifest_digest(REPOSITORY, "v2.0.0")
    assert digest == service.api.registry.manifest_digest(REPOSITORY, stack.revision_id("v2"))
    pinned = f"{service.api.registry.address}/{REPOSITORY}@{digest}"
    inspected = service.containers()
    assert len(inspected) == INSTANCES
    running = {i.instance_id for i in await stack.runtime.list("api") if i.state == "running"}
    for attrs in inspected:
        labels = attrs["Config"]["Labels"]
        assert attrs["Config"]["Image"] == pinned, attrs["Config"]["Image"]
        assert attrs["Image"] != digest  # the local image id is something else
        assert labels[f"{LABELS}service"] == "api"
        assert labels[f"{LABELS}environment"] == "prod"
        assert labels[f"{LABELS}revision"] == stack.revision_id("v2")
        assert labels[f"{LABELS}instance"] in running
        assert labels[f"{LABELS}deployment"]
        assert labels["org.opencontainers.image.revision"] == stack.revision_id("v2")
        assert attrs["Config"]["User"] == "1001:1001"
    print(
        f"\ndocker inspect: {len(inspected)} containers on {pinned}; labels "
        + json.dumps({k: v for k, v in inspected[0]["Config"]["Labels"].items()}, sort_keys=True)
    )


async def test_kill_9_of_a_deploy_while_v4_boots_is_ended_by_the_next_command(
    stack: Stack, service: Service
) -> None:
    """A `zerodown deploy` of v4 SIGKILLed while a v4 container boots: the next `zerodown
    status` re-adopts the containers and ends the deployment (rolled back or succeeded, naming
    the crash); the running containers are exactly the fleet the runtime and the router have,
    all on the wanted revision, and the load saw 0 failed requests."""
    await fleet_on(stack, "v2")
    before = {i.instance_id for i in await stack.runtime.list("api") if i.state == "running"}
    wanted_sha = stack.revision_id("v4")
    async with Load(stack.url) as load:
        child = spawn_zerodown(stack, "deploy", "api", "--env", "prod", "--revision", "v4.0.0")
        try:
            deployment_id = await wait_for_event(
                stack.store, wanted_sha, EventKind.INSTANCE_STARTING, 120
            )
        finally:
            child.kill()  # SIGKILL
            await asyncio.to_thread(child.wait, 10)
        assert child.returncode == -9, output_of(stack)
        assert (await stack.store.get_deployment(deployment_id)).state == "in_progress"
        began = time.monotonic()
        code, output = await run_zerodown(stack, "status", "--json", timeout=120)
        recovery_seconds = time.monotonic() - began
        assert code == 0, output
        served_after = await stack.versions()
    report = await load.report()

    final = await stack.store.get_deployment(deployment_id)
    events = [e for _, e in await stack.store.events(deployment_id)]
    assert any(e.kind is EventKind.DECISION and "recovering" in e.message for e in events)
    assert final.state in (DeploymentState.ROLLED_BACK, DeploymentState.SUCCEEDED), final
    assert "control-plane crash" in (final.reason or ""), final.reason
    assert await stack.store.unfinished() == []
    assert report.failed == 0, report.failures.most_common(3)
    wanted = "v2" if final.state is DeploymentState.ROLLED_BACK else "v4"
    assert served_after == {wanted}
    fleet = [i for i in await stack.runtime.list("api") if i.state == "running"]
    assert sorted(i.revision for i in fleet) == [stack.revision_id(wanted)] * INSTANCES
    if wanted == "v2":  # the v2 containers were re-adopted, not replaced
        assert {i.instance_id for i in fleet} == before
    containers = service.containers()
    by_label = {c["Config"]["Labels"][f"{LABELS}instance"] for c in containers}
    assert by_label == {i.instance_id for i in fleet}, (by_label, fleet)
    [route] = await stack.router.status()
    live = {t for t, weight in route.target_weights().items() if weight > 0}
    assert live == by_label, (live, by_label)
    # Nothing else of ours is left but crashed containers kept for their output.
    kept = [c["Name"].lstrip("/") for c in service.containers(everything=True)]
    others = [name for name in kept if not any(name.endswith(i) for i in by_label)]
    assert all("-exited-" in name for name in others), kept
    assert {c["Config"]["Labels"][f"{LABELS}revision"] for c in containers} == {
        stack.revision_id(wanted)
    }
    print(
        f"\nkill -9 of `zerodown deploy` while v4 booted: {final.state.value} by "
        f"`zerodown status` in {recovery_seconds:.2f} s ({final.reason}); containers "
        f"{sorted(by_label)} = fleet = router targets; {_numbers(report)}"
    )
