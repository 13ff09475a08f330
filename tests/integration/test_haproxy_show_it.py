"""Issue 11's "Show it", on HAProxy: the three runs as written, end to end.

Real LocalRuntime instances of examples/webapp/app.py behind a real HAProxy 2.6 on a random
loopback port, history in SQLite, closed-loop load throughout:
1. rolling v1 -> v2 under 50 connections for at least 20 s (10 % slow requests), an SSE stream
   and a WebSocket opened before the deploy, and `zerodown router restart` in the middle of it;
2. a canary answering 20 % 5xx, rolled back on HAProxy's own numbers;
3. `kill -9` of the control plane mid-deploy (a `zerodown deploy`, or `zerodown serve`), ended
   by the next `zerodown` command (or serve started again).
Each prints what it measured.
"""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest
from tests.integration.test_deploy_local import Stack

from zerodown.domain.events import DeploymentState, EventKind
from zerodown.engine.deployer import Deployer, DeployRequest
from zerodown.loadgen import LoadSpec, run_load
from zerodown.routers.registry import router_backend

from haproxy_show_fixtures import (  # isort: skip - sibling module
    DRAIN_TIMEOUT,
    EventTap,
    LongConnection,
    first_data,
    haproxy_servers,
    haproxy_stack,
    hold_sse,
    hold_websocket,
    output_of,
    run_zerodown,
    session_server,
    spawn_zerodown,
    start_serve,
    stop_process,
    timed_load,
    wait_for_event,
    wait_until_ended,
    write_config,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed"),
]
__all__ = ["haproxy_stack"]  # the fixture

LOAD_SECONDS = 21.0  # the issue asks for >= 20 s of load
STATE_RUNNING = 2  # `show servers state`: srv_op_state of a server that serves
ADMIN_READY = 0  # srv_admin_state without maint or drain


async def test_rolling_deploy_with_streams_and_a_reload_under_50_connections_fails_nothing(
    haproxy_stack: Stack,
) -> None:
    """v1 -> v2 (2 instances, rolling with surge) under 50 closed-loop clients, 10 % of them on
    /slow, for >= 20 s; an SSE stream and a WebSocket opened before the deploy; `zerodown router
    restart` (a hitless reload) while the first old instance drains: 0 failed requests, both
    long connections received data after their instance began draining and were closed no
    earlier than the drain timeout after that, and v2 serves at the end."""
    stack = haproxy_stack
    loaded = write_config(stack, instances=2, env={"BOOT_SECONDS": "1"})
    assert (await stack.deploy(loaded, "v1")).state is DeploymentState.SUCCEEDED
    backend = router_backend(loaded.config.router)
    sse, ws = LongConnection("SSE stream"), LongConnection("WebSocket")
    holders = [
        asyncio.ensure_future(hold_sse(stack.url, sse)),
        asyncio.ensure_future(hold_websocket(stack.url, ws)),
    ]
    tap = EventTap()
    reload: dict[str, float] = {}

    async def current_workers() -> set[int]:
        described = await backend.describe(stack.root / "state")
        return {p["pid"] for p in described if p["role"] == "worker"}

    async def restart_mid_drain() -> tuple[int, str, set[int], set[int]]:
        await asyncio.sleep(1.0)  # the drain has begun: slow requests and streams in flight
        before = await current_workers()
        began = time.monotonic()
        code, output = await run_zerodown(stack, "router", "restart")
        reload["seconds"] = time.monotonic() - began
        reload["at"] = time.time()
        after = await current_workers()
        return code, output, before, after

    tap.on_first(EventKind.DRAIN_STARTED, restart_mid_drain)
    spec = LoadSpec(
        url=stack.url,
        connections=50,
        slow_fraction=0.1,
        slow_path="/slow?seconds=1",
        max_seconds=90,
        max_requests=200_000,
        timeout=15,
    )
    stop = asyncio.Event()
    load = asyncio.ensure_future(run_load(spec, stop))
    load_started = time.monotonic()
    try:
        await first_data([sse, ws])
        servers = {c.kind: await session_server(stack, c.local_port) for c in (sse, ws)}
        deployer = Deployer(
            loaded, runtime=stack.runtime, router=stack.router, store=stack.store, observers=[tap]
        )
        record = await deployer.deploy(DeployRequest("api", "prod", "v2", "test"))
        deployed_at = time.time()
        [(code, output, before, after)] = await tap.finish()
        await asyncio.wait_for(asyncio.gather(*holders), 30)  # both ended with their instance
        left = LOAD_SECONDS - (time.monotonic() - load_started)
        if left > 0:
            await asyncio.sleep(left)  # the load goes on to the 20 s
    finally:
        stop.set()
        tap.cancel()
        for holder in holders:
            holder.cancel()
    report = await load

    assert record.state is DeploymentState.SUCCEEDED, record.reason
    assert code == 0, output
    assert before and after and not before & after, (before, after)  # new workers took over
    assert report.failed == 0, report.failures.most_common(3)
    assert report.seconds >= 20 and report.sent > 1000, (report.seconds, report.sent)
    assert set(report.versions) == {"v1", "v2"}
    drains = {e.data["instance"]: e.at for e in tap.events if e.kind is EventKind.DRAIN_STARTED}
    drained = {e.data["instance"]: e for e in tap.events if e.kind is EventKind.DRAIN_FINISHED}
    assert len(drains) == 2 and reload["at"] < deployed_at  # the reload was mid-deploy
    lived: dict[str, float] = {}
    for connection in (sse, ws):
        assert connection.closed_at is not None and connection.closed_at <= deployed_at
        assert connection.ended_by not in ("the stream's end", "all messages echoed")
        instance = servers[connection.kind]  # HAProxy's server name is the instance id
        began, finished = drains[instance], drained[instance]
        assert connection.received_after(began) > 0, connection
        lived[connection.kind] = connection.closed_at - began
        assert lived[connection.kind] >= DRAIN_TIMEOUT - 0.5, lived  # open until the timeout
        assert finished.data["forced"] >= 1  # and cut by the drain at its timeout,
        # not seconds later when the app is stopped (a reload's old worker holds both)
        assert connection.closed_at <= finished.at + 1.5, (connection, finished)
    assert await stack.versions() == {"v2"}
    assert await stack.running_revisions() == ["v2", "v2"]
    print(
        f"\nrolling behind HAProxy: {report.sent} requests in {report.seconds:.1f} s "
        f"({report.rate:.0f}/s, p99 {report.percentile(99) * 1000:.0f} ms), "
        f"{report.failed} failed; `zerodown router restart` took {reload['seconds']:.2f} s; "
        f"drains {[(d.data['seconds'], d.data['forced']) for d in drained.values()]}; "
        f"long connections on {servers}; "
        "open after their drain began: "
        + ", ".join(f"{c.kind} {lived[c.kind]:.1f} s ({c.ended_by})" for c in (sse, ws))
    )


async def test_canary_answering_20_percent_5xx_is_rolled_back_on_haproxys_numbers(
    haproxy_stack: Stack,
) -> None:
    """Canary `bad` (20 % of `/` answered 500) at a 20 % step under load: the analysis on
    HAProxy's `show stat` counters fails it, the rollback reason names the analysis, and the
    clients saw 5xx for no more than 10 s (first to last)."""
    stack = haproxy_stack
    strategy = {
        "type": "canary",
        "steps": [{"weight": 20, "pause": 30}],
        "analysis": {"interval": 0.5, "min_requests": 30, "inconclusive_limit": 3},
    }
    loaded = write_config(stack, instances=2, strategy=strategy)
    assert (await stack.deploy(loaded, "v1")).state is DeploymentState.SUCCEEDED
    assert stack.router.name == "haproxy"  # the numbers the analysis reads are HAProxy's
    stop = asyncio.Event()
    load = asyncio.ensure_future(timed_load(stack.url, stop, connections=10))
    try:
        record = await stack.deploy(loaded, "bad")
    finally:
        stop.set()
    report = await load

    assert record.state is DeploymentState.ROLLED_BACK, record.reason
    assert "canary analysis failed" in (record.reason or ""), record.reason
    analyses = [
        e.data for _, e in await stack.store.events(record.id) if e.kind is EventKind.ANALYSIS
    ]
    last = analyses[-1]
    assert last["verdict"] == "fail", last
    # HAProxy counted what the clients saw: the analysis' 5xx are some of the clients' 5xx.
    assert 0 < last["canary"]["errors_5xx"] <= report.errors_5xx, (last, report.errors_5xx)
    assert report.failures == {}, report.failures.most_common(3)  # only the canary's 500s
    assert report.versions["bad"] > 0 and report.window_5xx <= 10.0, report.window_5xx
    assert await stack.versions() == {"v1"}
    assert await stack.running_revisions() == ["v1", "v1"]
    servers = await haproxy_servers(stack)
    weights = {s.weight for s in servers.values()}
    assert len(servers) == 2 and len(weights) == 1 and min(weights) > 0, servers  # not 80/20
    print(
        f"\ncanary behind HAProxy: {report.sent} requests, {report.errors_5xx} answered 5xx "
        f"over {report.window_5xx:.2f} s (first to last seen by clients); analysis counted "
        f"{last['canary']['errors_5xx']}/{last['canary']['requests']} 5xx on the canary; "
        f"{len(analyses)} analyses; reason: {record.reason}"
    )


@pytest.mark.parametrize(
    ("killed", "kill_at"),
    [
        ("deploy", EventKind.INSTANCE_STARTING),
        ("deploy", EventKind.DRAIN_STARTED),
        ("serve", EventKind.DRAIN_STARTED),
    ],
)
async def test_kill_9_of_the_control_plane_mid_deploy_is_ended_on_restart_and_haproxy_matches(
    haproxy_stack: Stack, killed: str, kill_at: EventKind
) -> None:
    """The control plane running a rolling v1 -> v2 (a `zerodown deploy`, or the `zerodown
    serve` a deploy went through) SIGKILLed while a new instance boots or an old one drains:
    the next `zerodown status` (or serve started again) ends the deployment
    (rolled back or succeeded), HAProxy's servers (`show servers state`) are exactly the
    instances the runtime runs, all ready, and the load loop saw 0 failed requests."""
    stack = haproxy_stack
    loaded = write_config(stack, instances=2, env={"BOOT_SECONDS": "0.5"})
    assert (await stack.deploy(loaded, "v1")).state is DeploymentState.SUCCEEDED
    stop = asyncio.Event()
    spec = LoadSpec(
        url=stack.url,
        connections=30,
        slow_fraction=0.1,  # requests in flight make each drain last a while
        slow_path="/slow?seconds=1",
        max_seconds=120,
        max_requests=100_000,
        timeout=15,
    )
    serve = await start_serve(stack) if killed == "serve" else None
    load = asyncio.ensure_future(run_load(spec, stop))
    deploy = spawn_zerodown(stack, "deploy", "api", "--env", "prod", "--revision", "v2")
    try:
        victim = serve or deploy
        try:
            deployment_id = await wait_for_event(stack.store, "v2", kill_at, 60)
        finally:
            victim.kill()  # SIGKILL
            await asyncio.to_thread(victim.wait, 10)
        assert victim.returncode == -9, output_of(stack)
        await asyncio.to_thread(deploy.wait, 30)  # a deploy through serve ends with serve
        assert (await stack.store.get_deployment(deployment_id)).state == "in_progress"
        began = time.monotonic()
        if serve is None:
            code, output = await run_zerodown(stack, "status", "--json")
            assert code == 0, output
        else:
            serve = await start_serve(stack)  # it recovers at startup
            await wait_until_ended(stack.store, deployment_id, 60)
        recovery_seconds = time.monotonic() - began
        served_after = await stack.versions()
    finally:
        stop.set()
        if deploy.poll() is None:
            deploy.kill()
            await asyncio.to_thread(deploy.wait, 10)
        if serve is not None:
            await stop_process(serve)
    report = await load

    final = await stack.store.get_deployment(deployment_id)
    events = [e for _, e in await stack.store.events(deployment_id)]
    [took_over] = [e for e in events if e.kind is EventKind.DECISION and "recovering" in e.message]
    assert final.state in (DeploymentState.ROLLED_BACK, DeploymentState.SUCCEEDED), final
    assert "control-plane crash" in (final.reason or ""), final.reason
    assert await stack.store.unfinished() == []
    assert report.failed == 0, report.failures.most_common(3)
    wanted = "v1" if final.state is DeploymentState.ROLLED_BACK else "v2"
    assert served_after == {wanted}
    running = [i for i in await stack.runtime.list("api") if i.state == "running"]
    assert sorted(i.revision for i in running) == [wanted, wanted]
    servers = await haproxy_servers(stack)
    assert sorted(s.address for s in servers.values()) == sorted(
        f"{i.host}:{i.port}" for i in running
    ), servers
    assert {(s.op_state, s.admin_state) for s in servers.values()} == {
        (STATE_RUNNING, ADMIN_READY)
    }, servers
    print(
        f"\nkill -9 of {killed} at {kill_at.value} behind HAProxy: {final.state.value} "
        f"by {'serve' if killed == 'serve' else '`zerodown status`'} "
        f"in {recovery_seconds:.2f} s (the recovery itself {events[-1].at - took_over.at:.2f} s; "
        f"{final.reason}); HAProxy servers "
        f"{sorted(servers)} = running {sorted(i.instance_id for i in running)}; "
        f"{report.sent} requests, {report.failed} failed"
    )
