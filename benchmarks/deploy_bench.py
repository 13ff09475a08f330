"""Deploy benchmarks (issue 3): zero downtime under load, deploy overhead, rollback time.

Everything runs for real on this machine: LocalRuntime instances of examples/webapp behind the
built-in router, SQLite history, closed-loop load from `zerodown.loadgen`. Side by side in one
run: rolling surge, all-at-once, and a naive stop/start script (the seeds' `docker stop; docker
run; curl` loop) under the same load.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.machine import MachineFacts
from benchmarks.report import Section, Table
from zerodown.config.loader import LoadedConfig, load_config
from zerodown.control_plane import ControlPlane
from zerodown.engine.deployer import DeployRequest
from zerodown.engine.events import DeploymentEvent, DeploymentState, EventKind
from zerodown.loadgen import LoadReport, LoadSpec, run_load
from zerodown.store.base import DeploymentRecord

WEBAPP = Path(__file__).resolve().parents[1] / "examples" / "webapp"
# the revision named "bad" fails its health check
RUN = (
    'if [ "$ZERODOWN_REVISION" = bad ]; then export FAIL_HEALTH=1; fi; '
    f"exec {sys.executable} app.py"
)
CONNECTIONS = 50
SLOW_FRACTION = 0.10


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def progress(message: str) -> None:
    print(f"[deploy bench] {message}", file=sys.stderr, flush=True)


@dataclass
class Stack:
    """A throwaway project: zerodown.yml in a temp dir, opened as a control plane."""

    root: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self, *, instances: int, strategy: str, env: dict[str, str]) -> LoadedConfig:
        data: dict[str, Any] = {
            "state_dir": "state",
            "router": {"listen": [f"127.0.0.1:{self.port}"]},
            "services": {
                "api": {
                    "workdir": str(WEBAPP),
                    "run": RUN,
                    "instances": instances,
                    "drain_timeout": 30,
                    "stop_timeout": 10,
                    "env": env,
                    "health": {"preset": "fastapi", "start_period": 0},
                }
            },
            "environments": {"prod": {"strategy": {"type": strategy, "batch": 1}}},
        }
        path = self.root / "zerodown.yml"
        path.write_text(yaml.safe_dump(data))
        return load_config(path, environ={})

    async def deploy(self, loaded: LoadedConfig, revision: str) -> DeploymentRecord:
        plane = await ControlPlane.open(loaded)
        try:
            return await plane.deployer().deploy(DeployRequest("api", "prod", revision, "bench"))
        finally:
            await plane.close()

    async def events(self, loaded: LoadedConfig, deployment_id: str) -> list[DeploymentEvent]:
        plane = await ControlPlane.open(loaded, recover=False)
        try:
            return [event for _, event in await plane.store.events(deployment_id)]
        finally:
            await plane.close()


@asynccontextmanager
async def stack() -> AsyncIterator[Stack]:
    root = Path(tempfile.mkdtemp(prefix="zerodown-bench-"))
    s = Stack(root, _free_port())
    try:
        yield s
    finally:
        if (root / "zerodown.yml").exists():
            plane = await ControlPlane.open(load_config(root / "zerodown.yml"), recover=False)
            await plane.stop_everything()
            await plane.close()
        shutil.rmtree(root, ignore_errors=True)


def _load(url: str, seconds: float) -> LoadSpec:
    return LoadSpec(
        url=url,
        connections=CONNECTIONS,
        slow_fraction=SLOW_FRACTION,
        slow_path="/slow?seconds=2",
        max_seconds=seconds,
    )


async def zero_downtime(strategy: str, seconds: float) -> tuple[LoadReport, DeploymentRecord]:
    """2 instances v1 -> v2 under closed-loop load that lasts `seconds`."""
    async with stack() as s:
        loaded = s.config(instances=2, strategy=strategy, env={})
        await s.deploy(loaded, "v1")
        stop = asyncio.Event()
        load = asyncio.create_task(run_load(_load(s.url, seconds), stop))
        await asyncio.sleep(min(5.0, seconds / 4))  # steady load before the deploy starts
        record = await s.deploy(loaded, "v2")
        report = await load
        return report, record


async def naive_script(seconds: float) -> tuple[LoadReport, float]:
    """The seeds' way on one host: stop the container, start the new one, poll /health."""
    port = _free_port()
    env = {**os.environ, "PORT": str(port), "APP_VERSION": "v1"}

    async def start(version: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "app.py",
            cwd=WEBAPP,
            env={**env, "APP_VERSION": version},
            stdout=asyncio.subprocess.DEVNULL,
        )

    async def healthy() -> None:
        async with httpx.AsyncClient(timeout=1) as client:
            for _ in range(300):  # like the seeds' `for i in {1..30}; curl; sleep 10`, faster
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)

    old = await start("v1")
    await healthy()
    stop = asyncio.Event()
    load = asyncio.create_task(run_load(_load(f"http://127.0.0.1:{port}", seconds), stop))
    await asyncio.sleep(min(5.0, seconds / 4))
    began = time.monotonic()
    old.terminate()  # docker stop
    await old.wait()
    new = await start("v2")  # docker run
    await healthy()
    took = time.monotonic() - began
    report = await load
    new.terminate()
    await new.wait()
    return report, took


async def boot_seconds(boot: str) -> float:
    """How long examples/webapp takes from exec to a passing /health, without zerodown."""
    port = _free_port()
    env = {**os.environ, "PORT": str(port), "BOOT_SECONDS": boot}
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "app.py", cwd=WEBAPP, env=env, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        async with httpx.AsyncClient(timeout=1) as client:
            while time.monotonic() - started < 30:
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                        return time.monotonic() - started
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.02)
        raise RuntimeError("the webapp did not boot within 30 s")
    finally:
        process.terminate()
        await process.wait()


async def deploy_overhead(boot: str = "2") -> tuple[float, float]:
    """4 instances, batch 1, each booting in B s: (deploy wall seconds, measured B)."""
    async with stack() as s:
        loaded = s.config(instances=4, strategy="rolling", env={"BOOT_SECONDS": boot})
        await s.deploy(loaded, "v1")
        b = await boot_seconds(boot)
        started = time.monotonic()
        record = await s.deploy(loaded, "v2")
        wall = time.monotonic() - started
        if record.state is not DeploymentState.SUCCEEDED:
            raise RuntimeError(f"overhead deploy did not succeed: {record.reason}")
        return wall, b


async def rollback_time() -> tuple[float, float]:
    """A bad revision on 2 instances: (first failed check -> fleet on v1, rollback alone)."""
    async with stack() as s:
        loaded = s.config(instances=2, strategy="rolling", env={})
        await s.deploy(loaded, "v1")
        record = await s.deploy(loaded, "bad")
        if record.state is not DeploymentState.ROLLED_BACK or record.finished_at is None:
            raise RuntimeError(f"bad revision was not rolled back: {record.state}")
        events = await s.events(loaded, record.id)
        first_fail = next(
            e.at
            for e in events
            if e.kind is EventKind.HEALTH_PROBE
            and not e.data.get("ok", True)
            and "refused" not in str(e.data.get("detail", ""))
        )
        started = next(e.at for e in events if e.kind is EventKind.ROLLBACK_STARTED)
        finished = next(e.at for e in events if e.kind is EventKind.ROLLBACK_FINISHED)
        versions = set()
        async with httpx.AsyncClient(timeout=5) as client:
            for _ in range(20):
                versions.add((await client.get(s.url + "/")).json()["version"])
        if versions != {"v1"}:
            raise RuntimeError(f"after rollback the fleet serves {versions}")
        return finished - first_fail, finished - started


async def run(*, quick: bool, machine: MachineFacts) -> Section:
    """All deploy benchmarks, one after another."""
    started = datetime.now(UTC)
    seconds = 12.0 if quick else 20.0
    rows = []
    progress(f"rolling surge under load ({seconds:.0f} s)")
    rolling, rolling_record = await zero_downtime("rolling", seconds)
    progress("all-at-once under load")
    allatonce, allatonce_record = await zero_downtime("all-at-once", seconds)
    progress("naive stop/start script under load")
    naive, naive_took = await naive_script(seconds)
    for name, report, took in (
        ("zerodown rolling (surge, batch 1)", rolling, rolling_record.duration or 0.0),
        ("zerodown all-at-once", allatonce, allatonce_record.duration or 0.0),
        ("naive stop/start script", naive, naive_took),
    ):
        rows.append(
            (
                name,
                str(report.sent),
                str(report.failed),
                f"{100 * report.failed / max(report.sent, 1):.2f} %",
                f"{took:.1f} s",
                f"{report.percentile(99) * 1000:.0f} ms",
            )
        )
    runs = 1 if quick else 3
    progress(f"deploy overhead: 4 instances, batch 1, B = 2 s ({runs} runs)")
    overheads = sorted([await deploy_overhead("2") for _ in range(runs)], key=lambda r: r[0] / r[1])
    wall, boot = overheads[len(overheads) // 2]  # the median run
    ratio = wall / (4 * boot)
    progress("rollback time of a revision that fails its health check")
    to_restore, rollback_only = await rollback_time()
    met = rolling.failed == 0 and ratio <= 1.15
    return Section(
        key="deploy",
        title="Deploys: zero downtime, overhead, rollback time",
        goal=(
            "0 failed requests in a rolling surge deploy of 2 instances under load; "
            "deploy wall time <= 1.15 x (4 x B) for 4 instances, batch 1"
        ),
        met=met,
        tables=(
            Table(
                caption=(
                    f"v1 -> v2 on 2 instances under closed-loop load: {CONNECTIONS} connections, "
                    f"{seconds:.0f} s, {SLOW_FRACTION:.0%} of requests take 2 s."
                ),
                headers=("path", "requests", "failed", "failed %", "deploy time", "p99"),
                rows=tuple(rows),
            ),
            Table(
                caption="Deploy overhead and rollback time.",
                headers=("figure", "value"),
                rows=(
                    ("boot time B of one instance (measured alone)", f"{boot:.2f} s"),
                    ("rolling deploy of 4 instances, batch 1", f"{wall:.2f} s"),
                    (f"wall / (4 x B), median of {runs} run(s)", f"{ratio:.3f}"),
                    (
                        "all runs' ratios",
                        ", ".join(f"{w / (4 * b):.3f}" for w, b in overheads),
                    ),
                    ("first failed health check -> fleet on v1", f"{to_restore:.2f} s"),
                    ("rollback alone (start -> finished)", f"{rollback_only:.2f} s"),
                ),
            ),
        ),
        limits=(
            "all-at-once stops every old instance before the new ones are healthy: the router "
            "answers 503 meanwhile; the naive script loses every request sent while nothing "
            "listens on the port.",
            "Deploy overhead per batch is the supervisor start (~0.15 s) and at most one start "
            "probe interval (0.1 s with the fastapi preset); the wall time also opens the control "
            "plane (router check, history, recovery). The seeds' script waits 30 s + 10 s polls.",
            "Rollback time is dominated by the unhealthy threshold (3 answered failures at the "
            "start interval) and draining the failed instance.",
        ),
        measured_at=started,
        measured_on=machine.one_line() + (" (quick run)" if quick else ""),
        method=(
            "Real processes: LocalRuntime instances of examples/webapp behind the built-in "
            "router daemon, SQLite history, load from zerodown.loadgen (httpx, closed loop)."
        ),
    )
