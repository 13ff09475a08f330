"""Deploy benchmarks (issues 3 and 11): zero downtime under load, deploy overhead, rollback time.

Everything runs for real on this machine: LocalRuntime instances of examples/webapp behind a
router backend, SQLite history, closed-loop load from `zerodown.loadgen`. Side by side in one
run: rolling surge, all-at-once, and a naive stop/start script (the seeds' `docker stop; docker
run; curl` loop) under the same load; deploy overhead and rollback time behind every backend of
`ROUTERS` (the built-in router and HAProxy), with the same app, strategy and instance count.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.machine import MachineFacts
from benchmarks.report import Section, Table
from zerodown.config.loader import LoadedConfig, load_config
from zerodown.config.model import HEALTH_PRESETS
from zerodown.control_plane import ControlPlane
from zerodown.domain.events import DeploymentEvent, DeploymentState, EventKind
from zerodown.domain.records import DeploymentRecord
from zerodown.engine.deployer import DeployRequest
from zerodown.loadgen import LoadReport, LoadSpec, run_load

WEBAPP = Path(__file__).resolve().parents[1] / "examples" / "webapp"
# the revision named "bad" fails its health check
RUN = (
    'if [ "$ZERODOWN_REVISION" = bad ]; then export FAIL_HEALTH=1; fi; '
    f"exec {sys.executable} app.py"
)
CONNECTIONS = 50
SLOW_FRACTION = 0.10
OVERHEAD_INSTANCES = 4  # batch 1: one batch per instance
OVERHEAD_GOAL = 1.15  # deploy wall <= this x (batches x B)
# HAProxy checks a server that is coming up every `fastinter` (the health check's start_interval,
# 0.1 s with the fastapi preset): its overhead per batch may exceed the built-in router's by that.
HAPROXY_CHECK_INTERVAL = float(HEALTH_PRESETS["fastapi"]["start_interval"])


@dataclass(frozen=True)
class RouterSetup:
    """A router backend the deploy benchmarks run behind: a label and its `router:` settings
    in zerodown.yml (without `listen`, which every stack sets to its own port)."""

    label: str
    settings: Mapping[str, Any] = field(hash=False)

    @property
    def behind(self) -> str:
        """The label as a progress line says it ("behind the built-in router", "behind HAProxy")."""
        return self.label if self.label == HAPROXY_LABEL else f"the {self.label}"


HAPROXY_LABEL = "HAProxy"
BUILTIN = RouterSetup("built-in router", {"backend": "builtin"})
HAPROXY = RouterSetup(HAPROXY_LABEL, {"backend": "haproxy"})
ROUTERS = (BUILTIN, HAPROXY)


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
    router: RouterSetup = BUILTIN

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def router_section(self) -> dict[str, Any]:
        """`router:` of this stack's zerodown.yml: its backend's settings on its own port."""
        return {**self.router.settings, "listen": [f"127.0.0.1:{self.port}"]}

    def config(self, *, instances: int, strategy: str, env: dict[str, str]) -> LoadedConfig:
        data: dict[str, Any] = {
            "state_dir": "state",
            "router": self.router_section(),
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
async def stack(router: RouterSetup = BUILTIN) -> AsyncIterator[Stack]:
    """A Stack behind `router`; afterwards its instances and its router are stopped."""
    # A short path: the routers' control sockets must fit in sun_path (108 bytes).
    root = Path(tempfile.mkdtemp(prefix="zd-bench-", dir="/tmp"))
    s = Stack(root, _free_port(), router)
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


async def zero_downtime(
    strategy: str, seconds: float, router: RouterSetup = BUILTIN
) -> tuple[LoadReport, DeploymentRecord]:
    """2 instances v1 -> v2 behind `router` under closed-loop load that lasts `seconds`."""
    async with stack(router) as s:
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


@dataclass(frozen=True)
class OverheadRun:
    """One rolling deploy of `batches` instances, batch 1: its wall time and the boot time B of
    one instance, measured alone just before."""

    wall: float
    boot: float
    batches: int = OVERHEAD_INSTANCES

    @property
    def ratio(self) -> float:
        """wall / (batches x B): 1.0 would be booting the instances and nothing else."""
        return self.wall / (self.batches * self.boot)

    @property
    def per_batch(self) -> float:
        """What one batch costs beyond booting its instance (start, probe, admit, drain)."""
        return self.wall / self.batches - self.boot


@dataclass(frozen=True)
class RouterDeployFigures:
    """Deploy overhead and rollback time behind one router backend."""

    router: str  # RouterSetup.label
    overheads: tuple[OverheadRun, ...]
    to_restore: float  # first failed health check -> fleet on v1
    rollback_only: float  # rollback started -> finished

    @property
    def median(self) -> OverheadRun:
        """The median run by ratio (of an even count, the upper one)."""
        ranked = sorted(self.overheads, key=lambda r: r.ratio)
        return ranked[len(ranked) // 2]


def extra_per_batch(figures: RouterDeployFigures, baseline: RouterDeployFigures) -> float:
    """How much more a batch costs behind `figures`' router than behind `baseline`'s (medians)."""
    return figures.median.per_batch - baseline.median.per_batch


def overhead_table(figures: Sequence[RouterDeployFigures]) -> Table:
    """Deploy overhead and rollback time, one column per router backend (the first is the
    baseline the others' extra cost per batch is measured against)."""
    baseline = figures[0]
    runs = len(baseline.overheads)
    rows: list[tuple[str, ...]] = [
        (
            "boot time B of one instance (measured alone)",
            *(f"{f.median.boot:.2f} s" for f in figures),
        ),
        (
            f"rolling deploy of {baseline.median.batches} instances, batch 1",
            *(f"{f.median.wall:.2f} s" for f in figures),
        ),
        (
            f"wall / ({baseline.median.batches} x B), median of {runs} run(s)",
            *(f"{f.median.ratio:.3f}" for f in figures),
        ),
        ("all runs' ratios", *(", ".join(f"{r.ratio:.3f}" for r in f.overheads) for f in figures)),
        (
            "overhead per batch (wall / batches - B)",
            *(f"{f.median.per_batch:.2f} s" for f in figures),
        ),
        (
            f"overhead per batch above the {baseline.router}'s",
            "—",
            *(f"{extra_per_batch(f, baseline):+.2f} s" for f in figures[1:]),
        ),
        ("first failed health check -> fleet on v1", *(f"{f.to_restore:.2f} s" for f in figures)),
        ("rollback alone (start -> finished)", *(f"{f.rollback_only:.2f} s" for f in figures)),
    ]
    return Table(
        caption=(
            f"Deploy overhead ({baseline.median.batches} instances of examples/webapp, rolling, "
            "batch 1, B = 2 s) and rollback time of a revision that fails its health check "
            "(2 instances), behind each router, measured one after another in this run."
        ),
        headers=("figure", *(f.router for f in figures)),
        rows=tuple(rows),
    )


def judge_deploy(
    failed: Mapping[str, int], figures: Sequence[RouterDeployFigures]
) -> tuple[bool, str]:
    """The deploy goal: 0 failed requests in the rolling deploy behind every router, wall <=
    OVERHEAD_GOAL x (batches x B) behind every router, and each other router's overhead per
    batch at most HAPROXY_CHECK_INTERVAL above the first's. (verdict, the measured figures)."""
    baseline = figures[0]
    extras = {f.router: extra_per_batch(f, baseline) for f in figures[1:]}
    met = (
        all(n == 0 for n in failed.values())
        and all(f.median.ratio <= OVERHEAD_GOAL for f in figures)
        and all(extra <= HAPROXY_CHECK_INTERVAL + 1e-9 for extra in extras.values())
    )
    measured = "; ".join(
        f"{f.router}: {failed.get(f.router, 0)} failed, ratio {f.median.ratio:.3f}"
        + (f", {extras[f.router]:+.2f} s per batch" if f.router in extras else "")
        for f in figures
    )
    return met, measured


async def deploy_overhead(boot: str = "2", router: RouterSetup = BUILTIN) -> OverheadRun:
    """OVERHEAD_INSTANCES instances behind `router`, batch 1, each booting in B s."""
    async with stack(router) as s:
        env = {"BOOT_SECONDS": boot}
        loaded = s.config(instances=OVERHEAD_INSTANCES, strategy="rolling", env=env)
        await s.deploy(loaded, "v1")
        b = await boot_seconds(boot)
        started = time.monotonic()
        record = await s.deploy(loaded, "v2")
        wall = time.monotonic() - started
        if record.state is not DeploymentState.SUCCEEDED:
            raise RuntimeError(f"overhead deploy did not succeed: {record.reason}")
        return OverheadRun(wall, b)


async def rollback_time(router: RouterSetup = BUILTIN) -> tuple[float, float]:
    """A bad revision on 2 instances behind `router`: (first failed check -> fleet on v1,
    rollback alone)."""
    async with stack(router) as s:
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
    """All deploy benchmarks, one after another; overhead and rollback behind every router."""
    started = datetime.now(UTC)
    seconds = 12.0 if quick else 20.0
    paths: list[tuple[str, LoadReport, float]] = []
    failed: dict[str, int] = {}
    for router in ROUTERS:
        progress(f"rolling surge under load behind {router.behind} ({seconds:.0f} s)")
        report, record = await zero_downtime("rolling", seconds, router)
        paths.append(
            (f"zerodown rolling (surge, batch 1), {router.label}", report, record.duration or 0.0)
        )
        failed[router.label] = report.failed
    progress("all-at-once under load")
    allatonce, allatonce_record = await zero_downtime("all-at-once", seconds)
    paths.append(
        (f"zerodown all-at-once, {BUILTIN.label}", allatonce, allatonce_record.duration or 0.0)
    )
    progress("naive stop/start script under load")
    naive, naive_took = await naive_script(seconds)
    paths.append(("naive stop/start script", naive, naive_took))
    rows = [
        (
            name,
            str(report.sent),
            str(report.failed),
            f"{100 * report.failed / max(report.sent, 1):.2f} %",
            f"{took:.1f} s",
            f"{report.percentile(99) * 1000:.0f} ms",
        )
        for name, report, took in paths
    ]
    runs = 1 if quick else 3
    figures = []
    for router in ROUTERS:
        progress(
            f"deploy overhead behind {router.behind}: {OVERHEAD_INSTANCES} instances, "
            f"batch 1, B = 2 s ({runs} runs)"
        )
        overheads = tuple([await deploy_overhead("2", router) for _ in range(runs)])
        progress(f"rollback time of a revision that fails its health check ({router.label})")
        to_restore, rollback_only = await rollback_time(router)
        figures.append(RouterDeployFigures(router.label, overheads, to_restore, rollback_only))
    met, measured = judge_deploy(failed, figures)
    return Section(
        key="deploy",
        title="Deploys: zero downtime, overhead, rollback time",
        goal=(
            "0 failed requests in a rolling surge deploy of 2 instances under load; deploy wall "
            f"time <= {OVERHEAD_GOAL} x ({OVERHEAD_INSTANCES} x B) for {OVERHEAD_INSTANCES} "
            f"instances, batch 1 — both behind the {BUILTIN.label} and behind {HAPROXY.label}; "
            f"{HAPROXY.label}'s overhead per batch at most {HAPROXY_CHECK_INTERVAL:.2f} s (its "
            f"check interval for a server coming up, `fastinter`) above the {BUILTIN.label}'s "
            f"(measured: {measured})"
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
            overhead_table(figures),
        ),
        limits=(
            "all-at-once stops every old instance before the new ones are healthy: the router "
            "answers 503 meanwhile; the naive script loses every request sent while nothing "
            "listens on the port.",
            "Deploy overhead per batch is the supervisor start (~0.15 s) and at most one start "
            "probe interval (0.1 s with the fastapi preset); the wall time also opens the control "
            "plane (router check, history, recovery). The seeds' script waits 30 s + 10 s polls.",
            f"Behind {HAPROXY.label} a batch also costs Runtime API sessions: `add server` + "
            "`enable health` + `set server ... health up` + `enable server`, polling `show stat` "
            "(every 0.05 s) until the server is UP, then for the old instance `state drain`, "
            "`show servers conn` until no connection is used (every 0.1 s), `maint`, "
            "`shutdown sessions` and `del server` (retried while idle connections close); "
            "routes.json and haproxy.cfg are rewritten under an flock at every change.",
            "Rollback time is dominated by the unhealthy threshold (3 answered failures at the "
            "start interval) and draining the failed instance; the engine's own probes find the "
            "failure, so the router only changes how fast the instance is drained.",
        ),
        measured_at=started,
        measured_on=machine.one_line() + (" (quick run)" if quick else ""),
        method=(
            "Real processes: LocalRuntime instances of examples/webapp behind the built-in "
            "router daemon and behind HAProxy (`router: {backend: haproxy}`, started and driven "
            "by zerodown), SQLite history, load from zerodown.loadgen (httpx, closed loop). "
            "Each router gets the same app, strategy and instance count."
        ),
    )
