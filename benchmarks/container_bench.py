"""Deploy overhead with containers next to processes (issue 12): the same app, one run.

examples/webapp on 4 instances, rolling, batch 1, each booting in B = 2 s (BOOT_SECONDS), behind
the built-in router: once as local processes (`deploy_bench.deploy_overhead`), once as
containers of the docker runtime on Podman's Docker API, its revisions built from a Dockerfile,
pushed to a local registry and pinned by digest. Both deploys of v2 are timed from the request
to the end; v2's image is built and pushed before (a revision's image is built once, as a
pipeline's publish stage would), so the container figure is the runtime's, not the build's.
B is measured alone for each: the process from exec, the container from `Runtime.start`, to its
first passing /health.
"""

from __future__ import annotations

import asyncio
import importlib
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.deploy_bench import (
    BUILTIN,
    OVERHEAD_GOAL,
    OVERHEAD_INSTANCES,
    OverheadRun,
    deploy_overhead,
    progress,
    stack,
)
from benchmarks.image_bench import engine
from benchmarks.machine import MachineFacts
from benchmarks.report import BenchError, Section, Table
from zerodown.config.loader import LoadedConfig, load_config
from zerodown.config.runtime import DockerRuntimeConfig
from zerodown.domain.events import DeploymentState
from zerodown.images.base import ensure_base_image
from zerodown.revisions import prepare_release
from zerodown.runtimes.base import ContainerImage, InstanceSpec
from zerodown.runtimes.docker.runtime import DockerRuntime

WEBAPP = Path(__file__).resolve().parents[1] / "examples" / "webapp" / "app.py"
BASE = "localhost/zerodown-bench/python:bookworm"
BOOT = "2"
# The web app's pure-Python dependencies, copied from this interpreter into the image.
PACKAGES = ("uvicorn", "h11", "click", "websockets")


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def webapp_repo(repo: Path) -> None:
    """A git repo: the web app, its dependencies and a Dockerfile on BASE; tags v1 and v2."""
    repo.mkdir(parents=True)
    shutil.copy(WEBAPP, repo / "app.py")
    for package in PACKAGES:
        source = Path(str(importlib.import_module(package).__file__)).parent
        shutil.copytree(source, repo / "deps" / package, ignore=shutil.ignore_patterns("*.pyc"))
    (repo / "Dockerfile").write_text(
        f"FROM {BASE}\nCOPY . /app\nWORKDIR /app\n"
        "ENV PYTHONPATH=/app/deps PYTHONUNBUFFERED=1 HOST=0.0.0.0\n"
        'CMD ["python3", "app.py"]\n'
    )
    _git(repo, "init", "-q", "-b", "main")
    for version in ("v1", "v2"):
        (repo / "VERSION").write_text(version + "\n")
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", version)
        _git(repo, "tag", version)


def container_config(root: Path, port: int, api: str, registry: str) -> LoadedConfig:
    """zerodown.yml of the container stack: the deploy bench's service, built as an image."""
    data: dict[str, Any] = {
        "state_dir": "state",
        "router": {"backend": "builtin", "listen": [f"127.0.0.1:{port}"]},
        "runtime": {"backend": "docker", "url": api},
        "services": {
            "api": {
                "source": {"repo": str(root / "repo"), "path": "."},
                "build": {
                    "image": {
                        "dockerfile": "Dockerfile",
                        "engine": api,
                        "registry": {"address": registry},
                        "repository": "bench/webapp",
                    }
                },
                "instances": OVERHEAD_INSTANCES,
                "drain_timeout": 30,
                "stop_timeout": 10,
                "env": {"BOOT_SECONDS": BOOT},
                "health": {"preset": "fastapi", "start_period": 0},
            }
        },
        "environments": {"prod": {"strategy": {"type": "rolling", "batch": 1}}},
    }
    path = root / "zerodown.yml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path, environ={})


async def container_boot(runtime: DockerRuntime, image: str) -> float:
    """Seconds from `start` of one container of `image` (B = 2 s) to its first passing /health."""
    started = time.monotonic()
    spec = InstanceSpec(
        "boot", "v2", "boot-1", ContainerImage(image), env={"BOOT_SECONDS": BOOT}, stop_timeout=2
    )
    info = await runtime.start(spec)
    try:
        async with httpx.AsyncClient(timeout=1) as client:
            while time.monotonic() - started < 60:
                try:
                    if (await client.get(f"http://{info.address}/health")).status_code == 200:
                        return time.monotonic() - started
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.02)
        raise BenchError("a container of the web app did not boot within 60 s")
    finally:
        await runtime.stop("boot-1", timeout=2)
        await runtime.remove("boot-1")


async def container_overhead(root: Path) -> OverheadRun:
    """The container stack's v1 -> v2 deploy, timed, with v2's image built beforehand."""
    async with engine(root) as running:
        import docker

        client = docker.DockerClient(base_url=running.api, timeout=600)
        try:
            await asyncio.to_thread(ensure_base_image, client, BASE, packages=("python3",))
        finally:
            client.close()
        async with stack(BUILTIN) as s:
            await asyncio.to_thread(webapp_repo, s.root / "repo")
            loaded = container_config(s.root, s.port, running.api, running.registry)
            progress("containers: v1 (its image built and pushed first)")
            first = await s.deploy(loaded, "v1")
            if first.state is not DeploymentState.SUCCEEDED:
                raise BenchError(f"the container deploy of v1 failed: {first.reason}")
            service = loaded.config.services["api"]
            v2 = await prepare_release(
                "api", service, root=loaded.root, state_dir=loaded.state_dir, revision="v2"
            )
            if v2.image is None:
                raise BenchError("v2 was prepared without an image")
            runtime = DockerRuntime(DockerRuntimeConfig(url=running.api), loaded.state_dir)
            boot = await container_boot(runtime, v2.image)
            progress(f"containers: v1 -> v2 on {OVERHEAD_INSTANCES} instances (B {boot:.2f} s)")
            started = time.monotonic()
            record = await s.deploy(loaded, "v2")
            wall = time.monotonic() - started
            if record.state is not DeploymentState.SUCCEEDED:
                raise BenchError(f"the container deploy of v2 failed: {record.reason}")
            return OverheadRun(wall, boot)


async def run(*, quick: bool, machine: MachineFacts) -> Section:
    """Processes, then containers, one after another."""
    del quick  # one run of each already takes a minute
    started = datetime.now(UTC)
    for tool in ("podman", "docker-registry", "debootstrap"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed (scripts/setup-system.sh)")
    progress(f"processes: v1 -> v2 on {OVERHEAD_INSTANCES} instances")
    processes = await deploy_overhead(BOOT)
    root = Path(tempfile.mkdtemp(prefix="zd-cb-", dir="/tmp"))
    try:
        containers = await container_overhead(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    runs = {"processes (local runtime)": processes, "containers (docker runtime)": containers}
    table = Table(
        caption=(
            f"Deploy overhead of examples/webapp, {OVERHEAD_INSTANCES} instances, rolling, "
            f"batch 1, B = {BOOT} s, behind the built-in router, one run of each."
        ),
        headers=("figure", *runs),
        rows=(
            (
                "B: one instance alone, start to first passing /health",
                *(f"{r.boot:.2f} s" for r in runs.values()),
            ),
            ("deploy wall (v1 -> v2)", *(f"{r.wall:.2f} s" for r in runs.values())),
            ("wall / (batches x B)", *(f"{r.ratio:.3f}" for r in runs.values())),
            (
                "overhead per batch (wall / batches - B)",
                *(f"{r.per_batch:.2f} s" for r in runs.values()),
            ),
        ),
    )
    met = all(r.ratio <= OVERHEAD_GOAL for r in runs.values())
    return Section(
        key="containers",
        title="Deploy overhead: containers next to processes",
        goal=f"wall <= {OVERHEAD_GOAL} x (batches x B) on both runtimes (measured: processes "
        f"{processes.ratio:.3f}, containers {containers.ratio:.3f})",
        met=met,
        tables=(table,),
        limits=(
            "A container's B includes what the daemon does before the app runs (create, "
            "network, start: Podman 4.3 with runc and netavark here), so the same app's B is "
            "larger than as a process; the ratio compares each runtime with its own B.",
            "Each docker runtime call is a Docker API round trip over the unix socket, and "
            "`list()` inspects every container of the service, which the fleet does per step.",
        ),
        measured_at=started,
        measured_on=machine.one_line(),
        method=__doc__ or "",
    )
