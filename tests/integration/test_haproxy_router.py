"""The HAProxy router backend against a real HAProxy 2.6 and real example-app upstreams.

Every test runs HAProxy on a random 127.0.0.1 port under its own state dir; the fixture stops
HAProxy and the apps even when the test fails. Load loops are bounded in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from zerodown.config.router import HaproxyRouterConfig
from zerodown.errors import RouterError
from zerodown.health.spec import HealthCheckSpec
from zerodown.metrics.series import aggregate
from zerodown.routers.base import Router, RouteSpec, TargetHealth, TargetSpec, TrafficMetrics
from zerodown.routers.haproxy.backend import HaproxyBackend, backend
from zerodown.routers.haproxy.router import HaproxyRouter

from router_fixtures import WebApp, free_port, start_webapp  # isort: skip - sibling module

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")

ROUTE = "web.prod"


@dataclass
class Haproxy:
    """One test's HAProxy (through the backend), its upstreams and its address."""

    state_dir: Path
    port: int
    backend: HaproxyBackend
    apps: list[WebApp] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def open(self) -> HaproxyRouter:
        router = await self.backend.open(self.state_dir, [f"127.0.0.1:{self.port}"])
        assert isinstance(router, HaproxyRouter)
        return router

    async def webapp(self, name: str, **env: str) -> WebApp:
        app = await start_webapp(name, **{"APP_VERSION": name, **env})
        self.apps.append(app)
        return app


@pytest.fixture
async def haproxy(tmp_path: Path) -> AsyncIterator[Haproxy]:
    """HAProxy (not started yet: `open()`) with a 5 s hard-stop-after; all stopped at the end."""
    port = free_port()
    settings = HaproxyRouterConfig(listen=(f"127.0.0.1:{port}",), hard_stop_after=5.0)
    built = backend(settings)
    assert isinstance(built, HaproxyBackend)
    running = Haproxy(tmp_path / "state", port, built)
    try:
        yield running
    finally:
        with contextlib.suppress(Exception):
            await built.stop(running.state_dir)
        for app in running.apps:
            if app.process.poll() is None:
                app.kill()


def route(**overrides: object) -> RouteSpec:
    """web.prod with fast health checks."""
    values: dict[str, object] = {
        "service": ROUTE,
        "health": HealthCheckSpec(interval=0.5, healthy_threshold=1, unhealthy_threshold=2),
    }
    values.update(overrides)
    return RouteSpec(**values)  # type: ignore[arg-type]


def target(app: WebApp, revision: str = "r1", pool: str | None = None) -> TargetSpec:
    """The app as a target, in a pool of its own (named like it) unless `pool` names one."""
    return TargetSpec(ROUTE, app.name, "127.0.0.1", app.port, revision, pool or app.name)


@dataclass
class Load:
    """What a closed-loop load run saw."""

    ok: int = 0
    slow_ok: int = 0
    failures: list[str] = field(default_factory=list)
    instances: Counter[str] = field(default_factory=Counter)


async def closed_loop(
    base: str, stop: asyncio.Event, workers: int = 20, slow_every: int = 10, slow: float = 0.5
) -> Load:
    """`workers` clients, each sending its next request when the last one answered, until
    `stop` (at most 60 s and 5,000 requests each); every `slow_every`-th is /slow."""
    load = Load()
    deadline = time.monotonic() + 60
    limits = httpx.Limits(max_connections=workers + 5, max_keepalive_connections=workers + 5)
    async with httpx.AsyncClient(base_url=base, timeout=15.0, limits=limits) as client:

        async def worker(number: int) -> None:
            for count in range(5000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                is_slow = slow_every > 0 and (count + number) % slow_every == 0
                path = f"/slow?seconds={slow}" if is_slow else "/"
                try:
                    response = await client.get(path)
                except httpx.HTTPError as exc:
                    load.failures.append(f"{path}: {exc!r}")
                    continue
                if response.status_code != 200:
                    load.failures.append(f"{path}: HTTP {response.status_code}")
                    continue
                load.ok += 1
                if is_slow:
                    load.slow_ok += 1
                else:
                    load.instances[response.json()["instance"]] += 1

        await asyncio.gather(*(worker(n) for n in range(workers)))
    return load


async def count_instances(base: str, requests: int) -> Counter[str]:
    """Which instance answered each of `requests` sequential requests."""
    seen: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=base, timeout=10.0) as client:
        for _ in range(requests):
            response = await client.get("/")
            assert response.status_code == 200, response.text
            seen[response.json()["instance"]] += 1
    return seen


async def test_added_targets_receive_traffic(haproxy: Haproxy) -> None:
    """Two targets added through the Runtime API both answer; status says healthy; the router
    implements the Router and TrafficMetrics seams."""
    a, b = await haproxy.webapp("a"), await haproxy.webapp("b")
    router = await haproxy.open()
    assert isinstance(router, Router) and isinstance(router, TrafficMetrics)
    await router.apply_route(route(balance="round_robin"))
    await router.add_target(target(a), healthy=True)
    await router.add_target(target(b), healthy=True)
    seen = await count_instances(haproxy.base, 20)
    assert seen == Counter({"a": 10, "b": 10})
    [status] = await router.status(ROUTE)
    assert {t.spec.target_id: t.health for t in status.targets} == {
        "a": TargetHealth.HEALTHY,
        "b": TargetHealth.HEALTHY,
    }
    assert "server a 127.0.0.1:" in router.paths.config.read_text()  # mirrored into the file


async def test_pool_weights_90_10_shift_traffic_proportionally(haproxy: Haproxy) -> None:
    """Pool weights 90/10 in one session: 200 requests split 180/20 under round robin."""
    a, b = await haproxy.webapp("a"), await haproxy.webapp("b")
    router = await haproxy.open()
    await router.apply_route(route(balance="round_robin"))
    await router.add_target(target(a), healthy=True)
    await router.add_target(target(b), healthy=True)
    await router.set_pool_weights(ROUTE, {"a": 90, "b": 10})
    seen = await count_instances(haproxy.base, 200)
    assert seen == Counter({"a": 180, "b": 20})
    # Weights above HAProxy's 256 keep their proportions.
    await router.set_pool_weights(ROUTE, {"a": 360, "b": 40})
    seen = await count_instances(haproxy.base, 100)
    assert 88 <= seen["a"] <= 92, seen


async def test_a_pools_share_is_split_among_its_servers_in_one_session(haproxy: Haproxy) -> None:
    """Two servers in pool `old`, one in `new`; {old: 90, new: 10} is one Runtime API session
    (every server's weight in it) and 200 requests split about 90/90/20; a third server
    joining `old` takes a third of its share (about 60/60/60/20)."""
    a1, a2, b = [await haproxy.webapp(name) for name in ("a1", "a2", "b")]
    router = await haproxy.open()
    await router.apply_route(route(balance="round_robin"))
    for app, pool in ((a1, "old"), (a2, "old"), (b, "new")):
        await router.add_target(target(app, pool=pool), healthy=True)
    sessions: list[list[str]] = []
    session = router.api.session

    async def spy(commands: Sequence[str], *, check: bool = True) -> list[str]:
        sessions.append(list(commands))
        return await session(commands, check=check)

    router.api.session = spy  # type: ignore[method-assign]
    await router.set_pool_weights(ROUTE, {"old": 90, "new": 10})
    router.api.session = session  # type: ignore[method-assign]
    assert sessions == [
        [f"set server {ROUTE}/a1 weight 45", f"set server {ROUTE}/a2 weight 45",
         f"set server {ROUTE}/b weight 10"]
    ]  # fmt: skip
    # Round robin starts its new cycle where the last one stopped: within a few requests.
    seen = await count_instances(haproxy.base, 200)
    assert all(abs(seen[k] - n) <= 3 for k, n in {"a1": 90, "a2": 90, "b": 20}.items()), seen
    a3 = await haproxy.webapp("a3")
    await router.add_target(target(a3, pool="old"), healthy=True)
    seen = await count_instances(haproxy.base, 200)
    wanted = {"a1": 60, "a2": 60, "a3": 60, "b": 20}
    assert all(abs(seen[k] - n) <= 3 for k, n in wanted.items()), seen
    [status] = await router.status(ROUTE)
    assert status.pools == {"old": 90, "new": 10}


@pytest.mark.slow
async def test_drain_under_load_fails_nothing_and_waits_for_a_slow_request(
    haproxy: Haproxy,
) -> None:
    """20 connections, 10 % slow: draining b loses no request and lasts until b's slow
    request has answered."""
    a, b = await haproxy.webapp("a"), await haproxy.webapp("b")
    router = await haproxy.open()
    await router.apply_route(route())
    await router.add_target(target(b), healthy=True)
    async with httpx.AsyncClient(base_url=haproxy.base, timeout=15.0) as client:
        pinned = asyncio.create_task(client.get("/slow?seconds=2"))  # b is the only target
        await asyncio.sleep(0.3)
        await router.add_target(target(a), healthy=True)
        stop = asyncio.Event()
        load = asyncio.create_task(closed_loop(haproxy.base, stop))
        await asyncio.sleep(1.0)
        result = await router.drain_target(ROUTE, "b", timeout=10)
        await asyncio.sleep(0.5)
        stop.set()
        report = await load
        slow = await pinned
    assert slow.status_code == 200 and slow.json()["version"] == "b"
    assert report.failures == [] and report.ok > 50, report.failures[:5]
    assert result.forced == 0 and result.finished >= 1
    assert result.seconds >= 0.5, result  # it waited for the slow request on b
    assert [t.spec.target_id for t in (await router.status(ROUTE))[0].targets] == ["a"]
    print(f"drain: {result}; load ok={report.ok} slow={report.slow_ok} failed=0")


@pytest.mark.slow
async def test_an_sse_stream_open_across_a_drain_is_finished_not_cut(haproxy: Haproxy) -> None:
    """A 2 s SSE stream on b ends with all its events before drain_target returns."""
    a, b = await haproxy.webapp("a"), await haproxy.webapp("b")
    router = await haproxy.open()
    await router.apply_route(route())
    await router.add_target(target(b), healthy=True)
    events: list[str] = []
    async with httpx.AsyncClient(base_url=haproxy.base, timeout=15.0) as client:

        async def listen() -> float:
            async with client.stream("GET", "/sse?count=10&interval=0.2") as response:
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        events.append(line)
            return time.monotonic()

        stream = asyncio.create_task(listen())
        await asyncio.sleep(0.4)
        await router.add_target(target(a), healthy=True)
        result = await router.drain_target(ROUTE, "b", timeout=10)
        drained_at = time.monotonic()
        ended_at = await stream
    assert len(events) == 10 and all(e.endswith(" b") for e in events), events
    assert result.forced == 0 and ended_at <= drained_at
    assert 1.0 <= result.seconds < 10, result
    print(f"sse drain: {result}")


@pytest.mark.slow
async def test_a_reload_under_load_fails_nothing_and_keeps_weights_and_drain(
    haproxy: Haproxy,
) -> None:
    """restart() (master CLI reload) under 20-connection load: 0 failed requests; the 90/10
    weights and a drain in progress are still in force in the new worker."""
    a, b, c = await haproxy.webapp("a"), await haproxy.webapp("b"), await haproxy.webapp("c")
    router = await haproxy.open()
    await router.apply_route(route(balance="round_robin"))
    for app in (c, a, b):
        await router.add_target(target(app), healthy=True)
    await router.set_pool_weights(ROUTE, {"a": 90, "b": 10, "c": 0})
    async with httpx.AsyncClient(base_url=haproxy.base, timeout=15.0) as client:
        await router.set_pool_weights(ROUTE, {"c": 100, "a": 0, "b": 0})
        pinned = asyncio.create_task(client.get("/slow?seconds=3"))  # keeps c's drain going
        await asyncio.sleep(0.3)
        await router.set_pool_weights(ROUTE, {"a": 90, "b": 10, "c": 0})
        drain = asyncio.create_task(router.drain_target(ROUTE, "c", timeout=20))
        await asyncio.sleep(0.3)
        stop = asyncio.Event()
        load = asyncio.create_task(closed_loop(haproxy.base, stop))
        await asyncio.sleep(1.0)
        started = time.monotonic()
        new_pids = await haproxy.backend.restart(haproxy.state_dir)
        reload_seconds = time.monotonic() - started
        rows = await router._rows()
        assert rows[(ROUTE, "c")].status == "DRAIN"
        assert (rows[(ROUTE, "a")].weight, rows[(ROUTE, "b")].weight) == (90, 10)
        await asyncio.sleep(1.0)
        stop.set()
        report = await load
        result = await drain
        assert (await pinned).status_code == 200
    assert new_pids and report.failures == [], report.failures[:5]
    share_b = report.instances["b"] / max(1, report.instances["a"] + report.instances["b"])
    assert 0.03 < share_b < 0.2, report.instances
    assert report.instances["c"] == 0
    # The slow request on c outlived the reload in the old worker: the drain waited for it.
    assert result.forced == 0 and result.finished >= 1 and result.seconds >= 2.0, result
    print(f"reload took {reload_seconds:.2f} s; load ok={report.ok} failed=0; drain {result}")


async def test_a_dynamic_server_survives_a_reload(haproxy: Haproxy) -> None:
    """A server added at runtime is in haproxy.cfg, so the reloaded worker still routes to it."""
    a = await haproxy.webapp("a")
    router = await haproxy.open()
    await router.apply_route(route())
    await router.add_target(target(a, revision="r7"), healthy=True)
    await haproxy.backend.restart(haproxy.state_dir)
    assert await count_instances(haproxy.base, 3) == Counter({"a": 3})
    [status] = await router.status(ROUTE)
    assert [(t.spec.target_id, t.spec.revision, t.health) for t in status.targets] == [
        ("a", "r7", TargetHealth.HEALTHY)
    ]


async def server_connections(router: HaproxyRouter, server: str) -> tuple[int, int]:
    """(`connect`, `reuse`) of a server of the route in `show stat`: server connections opened,
    and requests sent over an idle one (health checks are counted apart)."""
    text = (await router.api.run("show stat")).lstrip("# ")
    header, *rows = (line.split(",") for line in text.splitlines() if line)
    for values in rows:
        row = dict(zip(header, values, strict=False))
        if (row["pxname"], row["svname"]) == (ROUTE, server):
            return int(row["connect"]), int(row["reuse"])
    raise AssertionError(f"no server {server} in show stat")


async def test_a_server_added_at_runtime_reuses_its_connections_like_a_config_file_one(
    haproxy: Haproxy,
) -> None:
    """20 requests on one keep-alive client connection reach a server added by `add server`
    over one server connection, before and after a reload (a 2.6 `add server` without
    pool-max-conn/pool-purge-delay opened a new connection per request: 3x the CPU)."""
    a = await haproxy.webapp("a")
    router = await haproxy.open()
    await router.apply_route(route())
    await router.add_target(target(a), healthy=True)
    for stage in ("added at runtime", "after a reload"):
        connect_before, reuse_before = await server_connections(router, "a")
        assert await count_instances(haproxy.base, 20) == Counter({"a": 20})
        connect, reuse = await server_connections(router, "a")
        connect, reuse = connect - connect_before, reuse - reuse_before
        assert (connect, reuse) == (1, 19), f"{stage}: {connect} connects, {reuse} reused"
        await haproxy.backend.restart(haproxy.state_dir)


async def kill_under_a_request(
    haproxy: Haproxy, send: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]
) -> tuple[HaproxyRouter, httpx.Response]:
    """Send a request to b (the only target), add a, kill -9 b while it holds the request."""
    a, b = await haproxy.webapp("a"), await haproxy.webapp("b")
    router = await haproxy.open()
    await router.apply_route(route(balance="round_robin"))
    await router.add_target(target(b), healthy=True)
    async with httpx.AsyncClient(base_url=haproxy.base, timeout=15.0) as client:
        pinned = asyncio.create_task(send(client))
        deadline = time.monotonic() + 5
        while (await router.status(ROUTE))[0].targets[0].inflight == 0:
            assert time.monotonic() < deadline, "the request never reached b"
            await asyncio.sleep(0.02)  # HAProxy publishes no event: poll with a deadline
        await router.add_target(target(a), healthy=True)
        b.kill()
        return router, await pinned


async def test_a_request_on_an_instance_killed_under_it_is_answered_by_another(
    haproxy: Haproxy,
) -> None:
    """kill -9 of b while it holds a request: HAProxy sends the request again, to a
    (`retry-on ... empty-response` with `option redispatch`), and the client gets a's 200, not
    a 502. This is what the L7 retries cost per request (HAProxy copies each request) buy."""
    _, response = await kill_under_a_request(haproxy, lambda c: c.get("/slow?seconds=1"))
    assert response.status_code == 200, response.text
    assert response.json()["version"] == "a"


async def test_a_post_on_an_instance_killed_under_it_is_not_sent_again(
    haproxy: Haproxy,
) -> None:
    """kill -9 of b while it holds a POST: HAProxy does not replay it to a (the app may have
    acted on it), as the built-in router does not: the client gets a 5xx and a never saw it."""
    router, response = await kill_under_a_request(
        haproxy, lambda c: c.post("/slow?seconds=1", content=b"pay 10")
    )
    assert response.status_code in (502, 503), response.text
    rows = await router._rows()
    assert rows[(ROUTE, "a")].requests == 0


async def test_metrics_count_requests_and_5xx_per_revision(haproxy: Haproxy) -> None:
    """HAProxy's counters become datapoints per revision: r2 answers only 500s."""
    a = await haproxy.webapp("a")
    b = await haproxy.webapp("b", ERROR_RATE="1")
    router = await haproxy.open()
    await router.apply_route(route(balance="round_robin"))
    await router.add_target(target(a, revision="r1"), healthy=True)
    await router.add_target(target(b, revision="r2"), healthy=True)
    since = time.time()
    await router.metrics(since)  # a baseline reading
    async with httpx.AsyncClient(base_url=haproxy.base, timeout=10.0) as client:
        statuses = Counter([(await client.get("/")).status_code for _ in range(40)])
    assert statuses == Counter({200: 20, 500: 20})
    report = await router.metrics(since - 10)
    groups = {g.key["revision"]: g for g in aggregate(report["datapoints"], by=("revision",))}
    assert (groups["r1"].requests, groups["r1"].errors_5xx) == (20, 0)
    assert (groups["r2"].requests, groups["r2"].errors_5xx) == (20, 20)
    assert groups["r1"].latency_avg_ms is not None
    assert {p["service"] for p in report["health"]} == {ROUTE}
    totals = {t["target"]: t for t in report["totals"]}
    assert totals["b"]["5xx"] == 20 and totals["a"]["health"] == "healthy"
    # A new control plane reads the recent periods back from metrics.json.
    fresh = haproxy.backend.router(haproxy.state_dir)
    again = await fresh.metrics(since - 10)
    r2 = [g for g in aggregate(again["datapoints"], by=("revision",)) if g.key["revision"] == "r2"]
    assert r2 and r2[0].errors_5xx == 20


async def test_haproxy_refusals_become_router_errors_with_a_sentence(haproxy: Haproxy) -> None:
    """A server HAProxy does not have: HAProxy's words and what to do, as RouterError."""
    a = await haproxy.webapp("a")
    router = await haproxy.open()
    await router.apply_route(route())
    await router.add_target(target(a), healthy=True)
    await router.api.session([f"set server {ROUTE}/a state maint", f"del server {ROUTE}/a"])
    with pytest.raises(
        RouterError,
        match=r"HAProxy refused `set server web.prod/a weight 5`: "
        r"No such server\..*zerodown router restart",
    ):
        await router.set_pool_weights(ROUTE, {"a": 5})
    with pytest.raises(RouterError, match=r"no route for service 'web\.other'"):
        await router.add_target(TargetSpec("web.other", "x", "127.0.0.1", 1), healthy=True)


async def test_open_after_the_control_plane_forgot_everything_finds_haproxy(
    haproxy: Haproxy,
) -> None:
    """A new backend object opening the same state dir reuses the running HAProxy (same master)
    and sees its targets with ids and revisions; a new listen address is added by a reload."""
    a = await haproxy.webapp("a")
    router = await haproxy.open()
    await router.apply_route(route())
    await router.add_target(target(a, revision="r9"), healthy=True)
    [master] = [
        p for p in await haproxy.backend.describe(haproxy.state_dir) if p["role"] == "master"
    ]
    other_port = free_port()
    forgetful = backend(HaproxyRouterConfig(listen=(f"127.0.0.1:{haproxy.port}",)))
    reopened = await forgetful.open(
        haproxy.state_dir, [f"127.0.0.1:{haproxy.port}", f"127.0.0.1:{other_port}"]
    )
    [status] = await reopened.status(ROUTE)
    assert [(t.spec.target_id, t.spec.revision, t.health) for t in status.targets] == [
        ("a", "r9", TargetHealth.HEALTHY)
    ]
    described = await forgetful.describe(haproxy.state_dir)
    assert [p["pid"] for p in described if p["role"] == "master"] == [master["pid"]]
    assert f"127.0.0.1:{other_port}" in described[0]["listen"]
    assert await count_instances(f"http://127.0.0.1:{other_port}", 2) == Counter({"a": 2})
    stopped = await forgetful.stop(haproxy.state_dir)
    assert master["pid"] in stopped
    assert await forgetful.describe(haproxy.state_dir) == []


async def test_routes_json_of_the_previous_version_is_read_and_reloaded(haproxy: Haproxy) -> None:
    """HAProxy run by the zerodown before pools (routes.json with per-target weights and the
    engine's labels, servers weighted 90/10 at runtime): a new client reads it without error
    and reloads it; the split stays 90/10 as pools `v1` and `v2`, and pool weights move it."""
    a, b = await haproxy.webapp("a"), await haproxy.webapp("b")
    router = await haproxy.open()
    await router.apply_route(route(balance="round_robin"))
    await router.add_target(target(a), healthy=True)
    await router.add_target(target(b), healthy=True)
    await router.api.session([f"set server {ROUTE}/a weight 90", f"set server {ROUTE}/b weight 10"])
    data = json.loads(router.paths.routes.read_text())
    [entry] = data["routes"]
    del entry["pools"]
    old = {"a": ("v1", 90, {"deployment": "d1"}), "b": ("v2", 10, {"warm_until": "1.0"})}
    for item in entry["targets"]:
        del item["pool"]
        revision, weight, labels = old[item["target_id"]]
        item |= {"revision": revision, "weight": weight, "labels": labels}
    router.paths.routes.write_text(json.dumps(data))
    await haproxy.backend.restart(haproxy.state_dir)
    fresh = await haproxy.open()
    [status] = await fresh.status(ROUTE)
    assert status.pools == {"v1": 90, "v2": 10}
    assert {t.spec.target_id: t.spec.pool for t in status.targets} == {"a": "v1", "b": "v2"}
    assert await count_instances(haproxy.base, 200) == Counter({"a": 180, "b": 20})
    await fresh.set_pool_weights(ROUTE, {"v1": 0, "v2": 100})
    assert await count_instances(haproxy.base, 20) == Counter({"b": 20})
    assert "labels" not in router.paths.routes.read_text()
