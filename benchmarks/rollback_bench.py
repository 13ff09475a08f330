"""Rollback benchmark (issues 4 and 11): from the first 5xx of a bad revision to 100 % of traffic
on the good one, at ~200 req/s, for canary, blue/green and rolling, behind the built-in router
and behind HAProxy; and how many requests reached the bad revision meanwhile.

Everything is real: LocalRuntime instances of examples/webapp behind the built-in router daemon
(which measures every request) or HAProxy (its `show stat` counters), SQLite history, an open-loop
load of ~200 req/s. Revision `bad` answers 5xx on 20 % of `/`. Canary detects it with its step
analysis; blue/green and rolling with an error-rate guard on the same router measurements, during
a bake after the traffic switch.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import yaml

from benchmarks.deploy_bench import BUILTIN, ROUTERS, WEBAPP, RouterSetup, Stack, stack
from benchmarks.machine import MachineFacts
from benchmarks.report import Section, Table
from zerodown.config.loader import LoadedConfig, load_config
from zerodown.config.progressive import AnalysisConfig
from zerodown.control_plane import ControlPlane
from zerodown.domain.events import DeploymentState
from zerodown.engine.analysis import Verdict, judge
from zerodown.engine.deployer import DeployRequest
from zerodown.engine.extensions import DeploymentContext
from zerodown.errors import AnalysisFailed
from zerodown.metrics.source import metrics_source
from zerodown.routers.base import PREVIEW_POOL

RATE = 200.0  # requests per second, open loop
GUARD_POLL = 0.5  # how often the error-rate guard reads the router's numbers
BAKE = 20.0  # seconds the bench's bake verifier keeps the guard watching after a switch
ANALYSIS = {"interval": GUARD_POLL, "min_requests": 20, "inconclusive_limit": 60}
RUN_BAD = (
    'if [ "$ZERODOWN_REVISION" = bad ]; then export ERROR_RATE=0.2; fi; '
    f"exec {sys.executable} app.py"
)
# The seeds' path, computed from their own numbers (seed 000): a 5xx alarm on 1-minute periods
# fires after at most one period; the CodeDeploy redeploy is OneAtATime over 2 instances, each
# 30 s connection draining + 30 s health-check wait + one 10 s probe interval.
SEED_PERIOD, SEED_DRAIN, SEED_WAIT, SEED_PROBE, SEED_INSTANCES = 60.0, 30.0, 30.0, 10.0, 2
STRATEGIES = ("canary", "blue-green", "rolling")
WINDOW_GOAL = 10.0  # seconds from the first 5xx to the last answer from `bad`
BOOT_ALLOWANCE = 2.0  # rolling starts good instances again: B ~ 1-2 s for the webapp


def progress(message: str) -> None:
    print(f"[rollback bench] {message}", file=sys.stderr, flush=True)


@dataclass
class Answers:
    """Every answer of the load: (done at, status, version)."""

    rows: list[tuple[float, int, str]] = field(default_factory=list)
    errors: int = 0

    def bad_window(self) -> tuple[float, int] | None:
        """(first 5xx of `bad` -> last answer from `bad`, requests `bad` answered)."""
        bad = [r for r in self.rows if r[2] == "bad"]
        first_5xx = next((r[0] for r in bad if r[1] >= 500), None)
        if first_5xx is None:
            return None
        return max(r[0] for r in bad) - first_5xx, len(bad)


async def open_loop(url: str, stop: asyncio.Event, answers: Answers) -> None:
    """~RATE requests per second, each on its own schedule (not waiting for the previous)."""
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        pending: set[asyncio.Task[None]] = set()

        async def one() -> None:
            try:
                answer = await client.get(url + "/")
                version = answer.json().get("version", "") if answer.content else ""
                answers.rows.append((time.monotonic(), answer.status_code, version))
            except (httpx.HTTPError, ValueError):
                answers.errors += 1

        started = time.monotonic()
        sent = 0
        while not stop.is_set() and time.monotonic() - started < 300:  # bounded
            due = started + sent / RATE
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if len(pending) < 256:  # an overloaded machine sheds load instead of piling up
                task = asyncio.ensure_future(one())
                pending.add(task)
                task.add_done_callback(pending.discard)
            sent += 1
        if pending:
            await asyncio.wait(pending, timeout=15)


class ErrorRateGuard:
    """A DeploymentGuard on the router's numbers: fails once the new revision's 5xx share is
    certainly above 5 % (the canary analysis' error check, applied to the whole new fleet)."""

    async def watch(self, ctx: DeploymentContext) -> None:
        source = metrics_source(ctx.router)
        since = time.time()
        config = AnalysisConfig(**ANALYSIS)
        for _ in range(int(600 / GUARD_POLL)):  # bounded; cancelled when the deploy ends
            await asyncio.sleep(GUARD_POLL)
            revision = ctx.record.revision
            stats = await source.revision_stats(ctx.route, [revision], since=since)
            result = judge(stats[revision], None, config)
            if result.verdict is Verdict.FAIL:
                raise AnalysisFailed(result.reason.replace("canary analysis", "error-rate guard"))


class Bake:
    """A Verifier that keeps the deployment (and so its guards) open for BAKE seconds once the
    new revision takes live traffic (blue/green also runs verifiers on its preview: no bake)."""

    async def verify(self, ctx: DeploymentContext) -> None:
        routes = await ctx.router.status(ctx.route)
        new = {info.instance_id for info in await ctx.new_instances()}
        ours = [t for r in routes for t in r.targets if t.spec.target_id in new]
        if any(t.spec.pool == PREVIEW_POOL for t in ours):
            return
        await asyncio.sleep(BAKE)


def _strategy(name: str) -> dict[str, Any]:
    if name == "canary":
        return {"type": "canary", "steps": [{"weight": 10, "pause": 30}], "analysis": ANALYSIS}
    if name == "blue-green":
        return {"type": "blue-green", "rollback_window": 600}
    return {"type": "rolling", "batch": 1}


@dataclass(frozen=True)
class RollbackRun:
    """One bad deploy rolled back: the bad window, the requests `bad` answered, all requests."""

    window: float  # first 5xx answered by `bad` -> last answer from `bad`, seconds
    on_bad: int
    total: int
    deploy_seconds: float


def window_limit(strategy: str) -> float:
    """The goal for one strategy: WINDOW_GOAL, plus a boot for rolling (it starts v1 again)."""
    return WINDOW_GOAL + (BOOT_ALLOWANCE if strategy == "rolling" else 0.0)


def summary_row(strategy: str, router: str, results: Sequence[RollbackRun]) -> tuple[str, ...]:
    """One table row: a strategy behind a router over its runs."""
    windows = [r.window for r in results]
    on_bad = sum(r.on_bad for r in results)
    total = sum(r.total for r in results)
    return (
        strategy,
        router,
        str(len(results)),
        f"{statistics.median(windows):.2f} s",
        f"{max(windows):.2f} s",
        f"{on_bad // len(results)}",
        f"{100 * on_bad / max(total, 1):.2f} %",
    )


def judge_rollbacks(results: dict[tuple[str, str], Sequence[RollbackRun]]) -> tuple[bool, str]:
    """Every (strategy, router)'s worst window within its limit; (verdict, worst per router)."""
    met = all(
        max(r.window for r in runs) <= window_limit(strategy)
        for (strategy, _), runs in results.items()
    )
    routers = dict.fromkeys(router for _, router in results)
    measured = "; ".join(
        f"{router}: "
        + ", ".join(
            f"{strategy} {max(r.window for r in runs):.2f} s"
            for (strategy, name), runs in results.items()
            if name == router
        )
        for router in routers
    )
    return met, measured


async def one_run(name: str, router: RouterSetup = BUILTIN) -> RollbackRun:
    """Deploy v1, then `bad` under load behind `router`, and measure its rollback."""
    async with stack(router) as s:
        loaded = _configure(s, name)
        plane = await ControlPlane.open(loaded)
        try:
            deployer = plane.deployer()
            await deployer.deploy(DeployRequest("api", "prod", "v1", "bench"))
            deployer.guards.append(ErrorRateGuard())
            if name != "canary":
                deployer.verifiers.append(Bake())
            answers, stop = Answers(), asyncio.Event()
            load = asyncio.ensure_future(open_loop(s.url, stop, answers))
            await asyncio.sleep(2.0)  # steady load first
            record = await deployer.deploy(DeployRequest("api", "prod", "bad", "bench"))
            await asyncio.sleep(1.0)  # answers in flight at the switch come back
            stop.set()
            await load
        finally:
            await plane.close()
    if record.state is not DeploymentState.ROLLED_BACK:
        raise RuntimeError(f"{name}: the bad revision was not rolled back: {record.reason}")
    window = answers.bad_window()
    if window is None:
        raise RuntimeError(f"{name}: no 5xx from the bad revision was seen")
    return RollbackRun(window[0], window[1], len(answers.rows), record.duration or 0.0)


def _configure(s: Stack, name: str) -> LoadedConfig:
    data = {
        "state_dir": "state",
        "router": s.router_section(),
        "services": {
            "api": {
                "workdir": str(WEBAPP),
                "run": RUN_BAD,
                "instances": 2,
                "drain_timeout": 10,
                "stop_timeout": 5,
                "health": {"preset": "fastapi", "start_period": 0},
            }
        },
        "environments": {"prod": {"strategy": _strategy(name)}},
    }
    path = s.root / "zerodown.yml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path, environ={})


async def run(*, quick: bool, machine: MachineFacts) -> Section:
    """Several runs per strategy behind every router (interleaved), then the seeds' reference."""
    started = datetime.now(UTC)
    runs = 2 if quick else 3
    results: dict[tuple[str, str], list[RollbackRun]] = {}
    for name in STRATEGIES:
        for router in ROUTERS:
            for number in range(1, runs + 1):
                progress(f"{name} behind {router.behind}: run {number}/{runs}")
                result = await one_run(name, router)
                results.setdefault((name, router.label), []).append(result)
    rows = [summary_row(name, router, found) for (name, router), found in results.items()]
    met, measured = judge_rollbacks(dict(results))
    seed_seconds = SEED_PERIOD + SEED_INSTANCES * (SEED_DRAIN + SEED_WAIT + SEED_PROBE)
    rows.append(
        (
            "seeds' path: 1-min alarm + CodeDeploy redeploy (computed, not measured)",
            "ALB",
            "-",
            f"{seed_seconds:.0f} s",
            f"{seed_seconds:.0f} s",
            f"{int(seed_seconds * RATE)}",
            "100 % of traffic during that time",
        )
    )
    routers = " and ".join(r.behind for r in ROUTERS)
    return Section(
        key="rollback",
        title="Rollback: first 5xx of a bad revision to 100 % on the good one",
        goal=(
            f"<= {WINDOW_GOAL:.0f} s for canary and blue/green, <= B + {WINDOW_GOAL:.0f} s for "
            f"rolling, at ~{RATE:.0f} req/s, behind {routers} alike (worst runs: {measured})"
        ),
        met=met,
        tables=(
            Table(
                caption=(
                    f"2 instances, revision `bad` answers 5xx on 20 % of `/`; open-loop load of "
                    f"{RATE:.0f} req/s. Time: first 5xx answered by `bad` -> last answer from "
                    "`bad`. Requests on bad: per run (median of runs), and share of all requests."
                ),
                headers=(
                    "strategy",
                    "router",
                    "runs",
                    "median",
                    "worst",
                    "requests on bad",
                    "share",
                ),
                rows=tuple(rows),
            ),
        ),
        limits=(
            f"Detection: canary analysis and the guard read the router's numbers every "
            f"{GUARD_POLL:g} s and need 20 requests or a certain failure; at 10 % canary weight "
            "that is ~1 s of traffic. Both routers give the same 10 s datapoints: the built-in "
            "router counts each request it answers; HAProxy's are the growth of its per-server "
            "`show stat` counters between two readings (each guard poll is one reading).",
            "The rollback itself is a weight flip (blue/green, canary: one Runtime API session of "
            "`set server ... weight` on HAProxy) or draining the bad instances (rolling: "
            "`state drain` until `show servers conn` is empty on HAProxy): in-flight requests on "
            "bad finish, which ends the window.",
            "The seeds' row is computed: one 60 s alarm period, then OneAtATime over 2 instances "
            "of 30 s draining + 30 s health-check wait + 10 s probe interval.",
        ),
        measured_at=started,
        measured_on=machine.one_line() + (" (quick run)" if quick else ""),
        method=(
            "Real processes: LocalRuntime instances of examples/webapp behind the built-in "
            "router daemon, then behind HAProxy (`router: {backend: haproxy}`, started and driven "
            "by zerodown), for each strategy in turn; SQLite history, httpx open-loop load."
        ),
    )
