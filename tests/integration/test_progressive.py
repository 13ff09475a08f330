"""Blue/green and canary end to end: real LocalRuntime instances of examples/webapp/app.py behind
the real built-in router or HAProxy (which measure every request), history in SQLite; the tests
marked ON_PROCESSES_AND_CONTAINERS also on containers (docker runtime on Podman's API).

Revision `bad` answers 5xx on 20 % of `/` (ERROR_RATE=0.2), `slow` adds 300 ms to every `/`.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from tests.integration.test_deploy_local import Load, Stack, stack

from zerodown.config.loader import LoadedConfig
from zerodown.domain.events import DeploymentState, EventKind
from zerodown.domain.records import DeploymentRecord
from zerodown.engine.deployer import Deployer, DeployRequest
from zerodown.engine.extensions import DeploymentContext
from zerodown.engine.strategies.blue_green import WarmRecords, reap_expired_blue
from zerodown.errors import VerificationFailed
from zerodown.routers.registry import router_backend
from zerodown.runtimes.local import LocalRuntime
from zerodown.store.sql import open_store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
__all__ = ["stack"]  # the fixture, re-used from the deploy tests

RUN = (
    'if [ "$ZERODOWN_REVISION" = bad ]; then export ERROR_RATE=0.2; fi; '
    'if [ "$ZERODOWN_REVISION" = slow ]; then export EXTRA_LATENCY_MS=300; fi; '
    f"exec {sys.executable} app.py"
)
FAST_ANALYSIS = {"interval": 0.5, "min_requests": 30, "inconclusive_limit": 3}


# The progressive tests on both routers with processes, and on containers (revisions are tags
# of a git repo built as images; see ON_EVERY_RUNTIME).
ON_PROCESSES_AND_CONTAINERS = pytest.mark.parametrize(
    "stack",
    ["builtin", "haproxy", pytest.param("builtin+docker", marks=pytest.mark.timeout(420))],
    indirect=True,
)


def _container_run(stack: Stack) -> str:
    """RUN for containers: a container's ZERODOWN_REVISION is its tag's sha. The repo's `bad`
    tag fails /health; here `bad` is re-tagged as a commit that answers 5xx instead."""
    assert stack.shas is not None
    repo = stack.root / "repo"
    if (repo / "FAIL_HEALTH").exists():
        (repo / "FAIL_HEALTH").unlink()
        (repo / "VERSION").write_text("bad\n")
        git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
        subprocess.run([*git, "commit", "-qam", "bad: 20 % 5xx"], check=True)
        subprocess.run([*git, "tag", "-f", "bad"], check=True, capture_output=True)
        head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True)
        stack.shas["bad"] = head.stdout.decode().strip()
    return (
        f'if [ "$ZERODOWN_REVISION" = {stack.shas["bad"]} ]; then export ERROR_RATE=0.2; fi; '
        "exec python3 app.py"
    )


def write_config(stack: Stack, strategy: dict[str, Any], *, instances: int = 2) -> LoadedConfig:
    """zerodown.yml with service `api` (per-revision faults) and environment `prod`."""
    container_run = _container_run(stack) if stack.docker is not None else ""
    return stack.write_config(
        instances=instances, strategy=strategy, run=RUN, container_run=container_run
    )


class PreviewSmokeCheck:
    """A Verifier: 60 requests with the preview header through the router; fails above 5 % 5xx.
    Also records which versions answered with and without the header."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.with_header: set[str] = set()
        self.without_header: set[str] = set()

    async def verify(self, ctx: DeploymentContext) -> None:
        header = {"X-Zerodown-Preview": "1"}
        errors = 0
        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(60):
                answer = await client.get(self.url + "/", headers=header)
                errors += answer.status_code >= 500
                self.with_header.add(answer.json()["version"])
            for _ in range(10):
                self.without_header.add((await client.get(self.url + "/")).json()["version"])
        if errors > 3:
            raise VerificationFailed(f"preview smoke check: {errors}/60 answers were 5xx")


async def _deploy(deployer: Deployer, revision: str) -> DeploymentRecord:
    return await deployer.deploy(DeployRequest("api", "prod", revision, "test"))


async def _data(stack: Stack, record: DeploymentRecord, kind: EventKind) -> list[dict[str, Any]]:
    return [e.data for _, e in await stack.store.events(record.id) if e.kind is kind]


async def test_blue_green_5xx_revision_is_caught_on_preview_and_never_takes_live_traffic(
    stack: Stack,
) -> None:
    """`bad` fails its preview smoke check: rolled back; under load no request saw `bad`, and
    the preview header reached only green while plain requests reached only blue."""
    loaded = write_config(stack, {"type": "blue-green"})
    assert (await _deploy(stack.deployer(loaded), "v1")).state is DeploymentState.SUCCEEDED
    check = PreviewSmokeCheck(stack.url)
    deployer = Deployer(
        loaded, runtime=stack.runtime, router=stack.router, store=stack.store, verifiers=[check]
    )
    async with Load(stack.url, connections=10) as load:
        record = await _deploy(deployer, "bad")
    report = await load.report()
    assert record.state is DeploymentState.ROLLED_BACK, record.reason
    assert "preview smoke check" in (record.reason or "")
    assert check.with_header == {"bad"} and check.without_header == {"v1"}
    assert set(report.versions) == {"v1"} and report.failed == 0
    assert await stack.running_revisions() == ["v1", "v1"]


@ON_PROCESSES_AND_CONTAINERS
async def test_blue_green_switches_atomically_and_rollback_in_the_window_is_a_flip(
    stack: Stack,
) -> None:
    """v1 -> v2 under load: 0 failed requests; `rollback` starts no instance and puts v1 back."""
    loaded = write_config(stack, {"type": "blue-green"})
    deployer = stack.deployer(loaded)
    assert (await _deploy(deployer, "v1")).state is DeploymentState.SUCCEEDED
    async with Load(stack.url, connections=10) as load:
        record = await _deploy(deployer, "v2")
    report = await load.report()
    assert record.state is DeploymentState.SUCCEEDED, record.reason
    assert report.failed == 0 and await stack.versions() == {"v2"}
    back = await deployer.rollback("api", "prod", actor="test")
    assert back.state is DeploymentState.SUCCEEDED, back.reason
    kinds = [e.kind for _, e in await stack.store.events(back.id)]
    assert EventKind.INSTANCE_STARTING not in kinds
    assert await stack.versions() == {"v1"}


@ON_PROCESSES_AND_CONTAINERS
async def test_canary_with_20_percent_5xx_fails_analysis_and_rolls_back(stack: Stack) -> None:
    """Under load the router's numbers show the canary's 5xx: fail, weight back on v1."""
    strategy = {"type": "canary", "steps": [{"weight": 20, "pause": 20}], "analysis": FAST_ANALYSIS}
    loaded = write_config(stack, strategy)
    deployer = stack.deployer(loaded)
    assert (await _deploy(deployer, "v1")).state is DeploymentState.SUCCEEDED
    async with Load(stack.url, connections=10):
        record = await _deploy(deployer, "bad")
    assert record.state is DeploymentState.ROLLED_BACK, record.reason
    assert "canary analysis failed" in (record.reason or "")
    last = (await _data(stack, record, EventKind.ANALYSIS))[-1]
    assert last["verdict"] == "fail" and last["canary"]["errors_5xx"] > 0
    assert await stack.versions() == {"v1"}
    [route] = await stack.router.status()
    [pool] = {t.spec.pool for t in route.targets}  # the baseline's, back at its full share:
    assert route.pools == {pool: 200}  # the canary's pool went with its last instance


async def test_slow_canary_fails_on_p95_latency(stack: Stack) -> None:
    """`slow` (+300 ms) against a fast baseline: the p95 check fails and the canary goes."""
    strategy = {"type": "canary", "steps": [{"weight": 30, "pause": 20}], "analysis": FAST_ANALYSIS}
    loaded = write_config(stack, strategy)
    deployer = stack.deployer(loaded)
    assert (await _deploy(deployer, "v1")).state is DeploymentState.SUCCEEDED
    async with Load(stack.url, connections=10):
        record = await _deploy(deployer, "slow")
    assert record.state is DeploymentState.ROLLED_BACK, record.reason
    last = (await _data(stack, record, EventKind.ANALYSIS))[-1]
    assert [c["name"] for c in last["checks"] if c["ok"] is False] == ["p95_latency"]
    assert await stack.running_revisions() == ["v1", "v1"]


async def test_low_traffic_canary_is_held_inconclusive_and_not_promoted(stack: Stack) -> None:
    """No load: every analysis says what is missing; the step never advances; it fails at the
    inconclusive limit and v1 keeps serving."""
    strategy = {
        "type": "canary",
        "steps": [{"weight": 10, "pause": 1}, {"weight": 50, "pause": 1}],
        "analysis": FAST_ANALYSIS,
    }
    loaded = write_config(stack, strategy)
    deployer = stack.deployer(loaded)
    assert (await _deploy(deployer, "v1")).state is DeploymentState.SUCCEEDED
    record = await _deploy(deployer, "v2")
    assert record.state is DeploymentState.ROLLED_BACK, record.reason
    analyses = await _data(stack, record, EventKind.ANALYSIS)
    assert {a["verdict"] for a in analyses} == {"inconclusive"}
    assert "requests needed" in analyses[-1]["missing"][0]
    assert [d["weight"] for d in await _data(stack, record, EventKind.STEP)] == [10]
    assert await stack.versions() == {"v1"}


async def test_sticky_cookie_keeps_a_client_on_its_revision(stack: Stack) -> None:
    """At a 50 % canary step a client with the cookie always gets the same version."""
    strategy = {
        "type": "canary",
        "sticky": True,
        "steps": [{"weight": 50}],
        "analysis": {**FAST_ANALYSIS, "inconclusive_limit": 60},
    }
    loaded = write_config(stack, strategy, instances=1)
    deployer = stack.deployer(loaded)
    assert (await _deploy(deployer, "v1")).state is DeploymentState.SUCCEEDED
    task = asyncio.ensure_future(_deploy(deployer, "v2"))
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(600):  # until the canary takes traffic; no cookie jar in between
                client.cookies.clear()
                first = await client.get(stack.url + "/")
                if first.json()["version"] == "v2":
                    break
                await asyncio.sleep(0.05)
            assert first.headers["set-cookie"].startswith("zerodown_rev=v2")
            # The client's jar now sends zerodown_rev=v2 with every request.
            seen = {(await client.get(stack.url + "/")).json()["version"] for _ in range(30)}
            plain = set()
            for _ in range(30):
                client.cookies.clear()
                plain.add((await client.get(stack.url + "/")).json()["version"])
        assert seen == {"v2"} and plain == {"v1", "v2"}
    finally:
        deployer.abort()
        await task


async def test_after_a_control_plane_restart_the_fleet_and_the_blue_reap_come_from_the_store(
    stack: Stack,
) -> None:
    """Blue/green v1 -> v2, then new clients of the same state, as a control plane restarted
    after `kill -9`: the router's files hold no engine bookkeeping (labels, deadlines), yet the
    fleet names each instance's deployment (runtime labels) and sees blue warm; the reaper
    leaves blue alone inside the window it reads from the history and drains it after."""
    loaded = write_config(stack, {"type": "blue-green", "rollback_window": 600})
    deployer = stack.deployer(loaded)
    blue_record = await _deploy(deployer, "v1")
    green_record = await _deploy(deployer, "v2")
    assert green_record.state is DeploymentState.SUCCEEDED, green_record.reason
    state_dir = loaded.state_dir
    for name in ("state.json", "routes.json"):
        for path in state_dir.rglob(name):
            text = path.read_text()
            assert "labels" not in text and "warm_until" not in text, path
    router = await router_backend(loaded.config.router).open(state_dir, [])
    runtime = LocalRuntime(state_dir)
    store = open_store(f"sqlite:///{state_dir / 'history.db'}")
    try:
        fresh = Deployer(loaded, runtime=runtime, router=router, store=store)
        members = await fresh.fleet("api", "prod", "after-restart", None).live()
        by_deployment = {
            record.id: sorted(
                (m.revision, m.serving, m.warm) for m in members if m.deployment == record.id
            )
            for record in (blue_record, green_record)
        }
        assert by_deployment == {
            blue_record.id: [("v1", False, True), ("v1", False, True)],
            green_record.id: [("v2", True, False), ("v2", True, False)],
        }
        records = WarmRecords(store)
        now = time.time()
        assert await reap_expired_blue(router, runtime, records, now=now) == []
        reaped = await reap_expired_blue(router, runtime, records, now=now + 601)
        assert sorted(reaped) == sorted(m.instance_id for m in members if m.revision == "v1")
        assert await stack.running_revisions() == ["v2", "v2"]
        [route] = await router.status()
        assert sorted(t.spec.revision for t in route.targets) == ["v2", "v2"]
        assert await stack.versions() == {"v2"}
    finally:
        await store.close()


async def test_every_canary_step_is_one_router_change_of_both_pools(stack: Stack) -> None:
    """A canary 20 % -> 50 % -> 100 % under load: the router takes each step as one change
    that names both pools (the built-in router: one `pool_weights` event each; HAProxy: one
    Runtime API session each), the splits are exactly the steps' (never both pools at 0, never
    another sum), and no request fails."""
    strategy = {
        "type": "canary",
        "steps": [{"weight": 20, "pause": 1}, {"weight": 50, "pause": 1}],
        "analysis": {**FAST_ANALYSIS, "min_requests": 10},
    }
    loaded = write_config(stack, strategy)
    deployer = stack.deployer(loaded)
    assert (await _deploy(deployer, "v1")).state is DeploymentState.SUCCEEDED
    router: Any = stack.router
    sessions_per_change: list[int] = []
    if stack.backend == "haproxy":
        set_pool_weights, session = router.set_pool_weights, router.api.session
        opened: list[int] = []

        async def counted(*args: Any, **kwargs: Any) -> list[str]:
            opened.append(1)
            result: list[str] = await session(*args, **kwargs)
            return result

        async def one_change(route: str, weights: dict[str, int]) -> None:
            opened.clear()
            router.api.session = counted
            try:
                await set_pool_weights(route, weights)
            finally:
                router.api.session = session
            sessions_per_change.append(len(opened))

        router.set_pool_weights = one_change
    else:
        since = (await router.events())[-1]["seq"]
    async with Load(stack.url, connections=10) as load:
        record = await _deploy(deployer, "v2")
    report = await load.report()
    assert record.state is DeploymentState.SUCCEEDED, record.reason
    assert report.failed == 0, report.failures.most_common(3)
    steps = [
        d["pool_weights"] for d in await _data(stack, record, EventKind.STEP) if "pool_weights" in d
    ]
    splits = []
    for weights in steps:
        assert len(weights) == 2 and sum(weights.values()) > 0, weights
        canary = next(w for pool, w in weights.items() if pool.startswith("v2"))
        splits.append(round(100 * canary / sum(weights.values())))
    assert splits == [20, 50, 100]
    if stack.backend == "haproxy":
        assert sessions_per_change == [1, 1, 1]
    else:
        changes = [e["weights"] for e in await router.events(since) if e["kind"] == "pool_weights"]
        assert changes == steps  # each step reached the router as that one change
    assert await stack.versions() == {"v2"}
