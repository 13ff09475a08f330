"""The router benchmark: nginx direct vs zerodown's router vs HAProxy, same load, one run.

Every path fronts the same nginx (one worker, keep-alive, a 3-byte answer). Each path gets a 2 s
warm-up, a closed-loop throughput run (`wrk -t1 -c50`) and a fixed-rate latency run (`hey -c 10
-q 100` = 1,000 req/s). Then the router runs once more under cProfile for the "what limits it" note.
All processes are children bound to 127.0.0.1 and stopped at the end, whatever happens.
The router is measured twice: one daemon, and a pool of two (`router.workers: 2`, SO_REUSEPORT).
HAProxy is measured hand-configured (three times: nbthread 1, default threads, and default threads
with zerodown's `retry-on` line, which costs a copy of every request) and as zerodown runs it
(`router: {backend: haproxy}`: a route and two targets put up by the engine's fleet, as a deploy
does, with health checks, leastconn and servers added at runtime), with the server connections
HAProxy opened for it (its own `show stat` counters).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from benchmarks.machine import (
    MachineFacts,
    process_tree,
    wait_for_quiet_machine,
)
from benchmarks.processes import (
    MAX_RUNS,
    NOISY_CPU,
    START_TIMEOUT,
    TOOL_SLACK,
    ProfileLine,
    Server,
    fixed_rate_load,
    free_port,
    least_disturbed,
    read_profile,
    run_tool,
    serving,
    stop_process,
)
from benchmarks.report import (
    BenchError,
    HeyResult,
    Section,
    Table,
    WrkResult,
    format_ms,
    parse_hey,
    parse_wrk,
)
from zerodown.config.loader import load_config
from zerodown.control_plane import ControlPlane
from zerodown.domain.events import EventKind
from zerodown.engine.fleet import FleetMember
from zerodown.errors import ZerodownError
from zerodown.routers.base import Router, RouterBackend, RouteSpec, TargetSpec
from zerodown.routers.builtin.client import BuiltinRouter, start_router_process, stop_router
from zerodown.routers.builtin.pool import WorkerPoolRouter, ensure_pool, stop_pool
from zerodown.routers.haproxy.runtime_api import RuntimeApi, SocketAddress
from zerodown.routers.haproxy.state import HaproxyPaths
from zerodown.routers.registry import router_backend

KEY = "router"
WARMUP_SECONDS = 2
WRK_CONNECTIONS = 50
HEY_WORKERS = 10
HEY_RATE_PER_WORKER = 100  # hey's -q is per worker: 10 x 100 = 1,000 req/s
THROUGHPUT_RATIO_GOAL = 0.5  # zerodown >= 0.5 x HAProxy (1 thread)
ADDED_P99_GOAL = 0.002  # seconds, at 1,000 req/s
MANAGED_THROUGHPUT_GOAL = 0.9  # zerodown-managed HAProxy >= 0.9 x the hand-configured one
MANAGED_P99_SLACK = 0.1  # its added p99 <= the hand-configured one's x (1 + this) ...
HEY_RESOLUTION = 0.0001  # ... or + hey's resolution (0.1 ms), whichever is larger
MANAGED_TARGETS = 2  # the managed route's targets (both the one nginx)
RELOAD_GAIN_NOTABLE = 1.2  # a reload that gains this much says the dynamic servers cost it
ZERODOWN_RETRY_ON = "conn-failure empty-response"  # as routers/haproxy/config.py writes it


DIRECT = "direct to nginx"
ZERODOWN = "zerodown router"
POOL_WORKERS = 2
ZERODOWN_POOL = f"zerodown router, {POOL_WORKERS} workers"
HAPROXY_1 = "HAProxy, nbthread 1"
HAPROXY_DEFAULT = "HAProxy, default threads"
HAPROXY_RETRY = "HAProxy, default threads, with zerodown's retry-on"
HAPROXY_MANAGED = "zerodown-managed HAProxy"
HAPROXY_RELOADED = "zerodown-managed HAProxy, after a reload"


@dataclass(frozen=True)
class PathFigures:
    """Throughput and fixed-rate latency of one path, and the CPU its server used under wrk."""

    name: str
    wrk: WrkResult
    hey: HeyResult
    proxy_cpu: float | None  # CPU seconds per wall second of the proxy under wrk; None: direct
    upstream_cpu: float  # the same for nginx
    wrk_cpu: float = 0.0  # the same for wrk itself
    other_cpu: float = 0.0  # the rest of the machine: work that is not this benchmark's
    hey_other_cpu: float = 0.0  # the same during the hey run
    repeats: int = 0  # runs made again because outside work disturbed them


@dataclass(frozen=True)
class RouterFigures:
    """Everything one run of the router benchmark measured."""

    paths: dict[str, PathFigures]
    profile: list[ProfileLine]  # top by cumulative time
    profile_own: list[ProfileLine]  # top by own time
    seconds: int
    # Per managed path: (server connections opened, requests sent over a reused one), HAProxy's
    # own counters for the route's servers over the path's warm-up, wrk and hey runs.
    connections: dict[str, tuple[int, int]] = field(default_factory=dict)

    def throughput_ratio(self, baseline: str, path: str = ZERODOWN) -> float:
        """`path`'s requests/s (zerodown's by default) over `baseline`'s."""
        return self.paths[path].wrk.requests_per_sec / self.paths[baseline].wrk.requests_per_sec

    def added_p99(self, name: str) -> float | None:
        """`name`'s p99 at the fixed rate minus the direct path's (None if hey left one out)."""
        path, direct = self.paths[name].hey.p99, self.paths[DIRECT].hey.p99
        return None if path is None or direct is None else path - direct


# -- the servers -------------------------------------------------------------------------------


def nginx_config(workdir: Path, port: int) -> str:
    """One worker, keep-alive for the whole run, no access log, a fixed 3-byte answer."""
    temp = workdir / "nginx-temp"
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers may not drop to a missing user
    return f"""{user}worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_timeout 65s;
    keepalive_requests 10000000;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ default_type text/plain; return 200 "ok\\n"; }}
    }}
}}
"""


def haproxy_config(
    port: int, upstream_port: int, threads: int | None, retry_on: str | None = None
) -> str:
    """One frontend, one backend, keep-alive both sides, idle server connections reused always;
    `retry_on`: a `retry-on` line (L7 retries make HAProxy copy every request it sends)."""
    nbthread = f"    nbthread {threads}\n" if threads else ""
    retry = f"    retry-on {retry_on}\n" if retry_on else ""
    return f"""global
{nbthread}    maxconn 4096

defaults
    mode http
    option http-keep-alive
    http-reuse always
{retry}    timeout connect 5s
    timeout client 75s
    timeout server 60s

frontend bench
    bind 127.0.0.1:{port}
    default_backend nginx

backend nginx
    server nginx 127.0.0.1:{upstream_port}
"""


def nginx_command(workdir: Path) -> Callable[[int], list[str]]:
    """How to run nginx in the foreground with its config, logs and temp files under `workdir`."""

    def command(port: int) -> list[str]:
        config = workdir / "nginx.conf"
        config.write_text(nginx_config(workdir, port))
        error_log = str(workdir / "nginx-error.log")  # -e: before the config is read, too
        return ["nginx", "-p", str(workdir), "-e", error_log, "-c", str(config)]

    return command


def haproxy_command(
    workdir: Path, upstream_port: int, threads: int | None, retry_on: str | None = None
) -> Callable[[int], list[str]]:
    """How to run HAProxy in the foreground (-db) with a generated config."""

    def command(port: int) -> list[str]:
        config = workdir / f"haproxy-{threads or 'default'}{'-retry' if retry_on else ''}.cfg"
        config.write_text(haproxy_config(port, upstream_port, threads, retry_on))
        return ["haproxy", "-db", "-f", str(config)]

    return command


async def configure_router(router: Router, upstream_port: int) -> None:
    """One route, `bench`, with nginx as its one target, healthy at once."""
    await router.apply_route(RouteSpec(service="bench"))
    target = TargetSpec(service="bench", target_id="nginx", host="127.0.0.1", port=upstream_port)
    await router.add_target(target, healthy=True)


def _listen_port(info: dict[str, Any]) -> int:
    return int(str(info["listen"][0]).rpartition(":")[2])


@contextlib.asynccontextmanager
async def zerodown_router(workdir: Path, upstream_port: int) -> AsyncIterator[Server]:
    """zerodown's router daemon, started through the control plane's client API, on a free port."""
    state_dir = workdir / "router"
    info = await start_router_process(state_dir, ["127.0.0.1:0"], grace=5.0)
    try:
        await configure_router(BuiltinRouter(state_dir), upstream_port)
        yield Server("zerodown", _listen_port(info), int(info["pid"]))
    finally:
        await stop_router(state_dir, timeout=15.0)


@contextlib.asynccontextmanager
async def zerodown_pool(workdir: Path, upstream_port: int) -> AsyncIterator[list[Server]]:
    """POOL_WORKERS router daemons on one free port (SO_REUSEPORT), as `router.workers` starts
    them; one Server per worker."""
    state_dir = workdir / "pool"
    try:
        infos = await ensure_pool(state_dir, ["127.0.0.1:0"], POOL_WORKERS, grace=5.0)
        await configure_router(WorkerPoolRouter(state_dir, POOL_WORKERS), upstream_port)
        yield [Server(f"zerodown-{k}", _listen_port(i), int(i["pid"])) for k, i in enumerate(infos)]
    finally:
        await stop_pool(state_dir, timeout=15.0)


class _Unrecorded:
    """An `EventSink` for the fleet steps of the managed HAProxy: no deployment to record to."""

    async def emit(self, kind: EventKind, message: str, data: dict[str, Any] | None = None) -> None:
        """Drop the event."""

    def emit_soon(self, kind: EventKind, message: str, data: dict[str, Any] | None = None) -> None:
        """Drop the event."""


def managed_config(port: int) -> dict[str, Any]:
    """The zerodown.yml of the managed HAProxy: `router: {backend: haproxy}` on `port`, and a
    service whose health check is the fastapi preset (nginx answers 200 on /health)."""
    return {
        "state_dir": "state",
        "router": {"backend": "haproxy", "listen": [f"127.0.0.1:{port}"], "hard_stop_after": 10},
        "services": {
            "bench": {"run": "true", "instances": MANAGED_TARGETS, "health": {"preset": "fastapi"}}
        },
        "environments": {"prod": {}},
    }


@dataclass(frozen=True)
class ManagedHaproxy:
    """The HAProxy `managed_haproxy` runs: where it listens, and how to reload it."""

    server: Server  # pid: the master (its workers are its children)
    backend: RouterBackend
    state_dir: Path

    async def reload(self) -> None:
        """A hitless reload (`zerodown router restart`): the servers added at runtime come back
        from haproxy.cfg as static servers."""
        await self.backend.restart(self.state_dir)

    async def server_connections(self) -> tuple[int, int]:
        """What the current worker's servers did since it started: see `server_connections`."""
        admin = SocketAddress(unix=str(HaproxyPaths.under(self.state_dir).admin_socket))
        return server_connections(await RuntimeApi(admin).run("show stat"))


def server_connections(show_stat: str) -> tuple[int, int]:
    """(connections opened, requests sent over an idle connection reused) by every server in
    `show stat` (`connect` and `reuse`; health checks are not counted)."""
    opened = reused = 0
    for row in csv.DictReader(io.StringIO(show_stat.lstrip("# "))):
        if row.get("type") == "2":  # a server
            opened += int(row.get("connect") or 0)
            reused += int(row.get("reuse") or 0)
    return opened, reused


@contextlib.asynccontextmanager
async def managed_haproxy(workdir: Path, upstream_port: int) -> AsyncIterator[ManagedHaproxy]:
    """HAProxy as zerodown runs it: a control plane of `managed_config` opens it through the
    registry, and the engine's fleet puts up the route (`ensure_route`) and admits MANAGED_TARGETS
    checked targets (`admit`: add server, enable health, enable server), as a deploy does; all
    targets are the one nginx. Stopped (routes removed, HAProxy stopped) when the block ends."""
    root = workdir / "managed"
    root.mkdir(exist_ok=True)
    path = root / "zerodown.yml"
    port = free_port()  # HAProxy's first listen address may be another one: a reused state dir
    path.write_text(yaml.safe_dump(managed_config(port)))
    loaded = load_config(path, environ={})
    plane = await ControlPlane.open(loaded, recover=False)
    try:
        fleet = plane.deployer().fleet("bench", "prod", "bench", _Unrecorded())
        await fleet.ensure_route()
        for k in range(MANAGED_TARGETS):
            member = FleetMember(
                f"nginx-{k}", "bench", "bench", "127.0.0.1", upstream_port, in_router=False
            )
            await fleet.admit(member)
        backend = router_backend(loaded.config.router)
        processes = await backend.describe(loaded.state_dir)
        master = next(int(p["pid"]) for p in processes if p["role"] == "master")
        server = Server("haproxy-managed", port, master)
        yield ManagedHaproxy(server, backend, loaded.state_dir)
    finally:
        await plane.stop_everything()
        await plane.close()


# -- measuring ---------------------------------------------------------------------------------


async def run_wrk(url: str, seconds: int) -> WrkResult:
    """Closed-loop throughput: one wrk thread keeping WRK_CONNECTIONS requests in flight."""
    command = ["wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s", "--latency", url]
    return parse_wrk(await run_tool(command, seconds + TOOL_SLACK))


async def run_hey(url: str, seconds: int) -> HeyResult:
    """Fixed rate: HEY_WORKERS workers, each limited to HEY_RATE_PER_WORKER requests/s.

    Without hey, the Python generator in `benchmarks.processes` makes the same load.
    """
    if shutil.which("hey") is None:
        port = int(url.rstrip("/").rpartition(":")[2])
        return await fixed_rate_load("127.0.0.1", port, seconds, HEY_WORKERS, HEY_RATE_PER_WORKER)
    command = ["hey", "-z", f"{seconds}s", "-c", str(HEY_WORKERS), "-q", str(HEY_RATE_PER_WORKER)]
    return parse_hey(await run_tool([*command, url], seconds + TOOL_SLACK))


async def measure_path(
    name: str,
    port: int,
    seconds: int,
    proxy_pid: int | None,
    upstream_pid: int,
    more_proxy_pids: Sequence[int] = (),
) -> PathFigures:
    """Warm up, then wrk (with the CPU the proxy and nginx use meanwhile), then hey.

    `more_proxy_pids`: the proxy's other processes (a router pool's other workers)."""
    url = f"http://127.0.0.1:{port}/"
    progress(f"{name}: warm-up {WARMUP_SECONDS} s, wrk {seconds} s, hey {seconds} s")
    await run_wrk(url, WARMUP_SECONDS)
    proxy = [p for pid in (proxy_pid, *more_proxy_pids) if pid for p in process_tree(pid)]
    pids = (proxy, process_tree(upstream_pid))
    wrk, cpu, wrk_runs = await least_disturbed(
        lambda: run_wrk(url, seconds), pids, lambda text: progress(f"{name} wrk: {text}")
    )
    hey, hey_cpu, hey_runs = await least_disturbed(
        lambda: run_hey(url, seconds), pids, lambda text: progress(f"{name} hey: {text}")
    )
    return PathFigures(
        name, wrk, hey, cpu.proxy if proxy_pid else None, cpu.upstream, cpu.children, cpu.other,
        hey_cpu.other, repeats=wrk_runs + hey_runs - 2,
    )  # fmt: skip


def progress(message: str) -> None:
    """One line on stderr so a long run shows where it is."""
    print(f"[bench:{KEY}] {message}", file=sys.stderr, flush=True)


# -- profile -----------------------------------------------------------------------------------


async def profile_router(workdir: Path, upstream_port: int, seconds: int) -> Path:
    """Run the router daemon under cProfile, load it with wrk, stop it, and read the profile."""
    state_dir = workdir / "router-profile"
    state_dir.mkdir(parents=True, exist_ok=True)  # the daemon makes its own layout inside
    output = workdir / "router.prof"
    command = [
        sys.executable, "-m", "cProfile", "-o", str(output),
        "-m", "zerodown.routers.builtin.daemon",
        "--state-dir", str(state_dir), "--listen", "127.0.0.1:0", "--grace", "5",
    ]  # fmt: skip
    with (workdir / "router-profile.log").open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT
        )
    try:
        info = await wait_for_router(state_dir, process)
        await configure_router(BuiltinRouter(state_dir), upstream_port)
        progress(f"profiling the router under wrk for {seconds} s")
        await run_wrk(f"http://127.0.0.1:{_listen_port(info)}/", seconds)
    finally:
        await stop_process(process, timeout=20.0)  # SIGTERM: the daemon returns, cProfile writes
    if not output.exists():
        raise BenchError(f"the profiled router wrote no profile; see {workdir}/router-profile.log")
    return output


async def wait_for_router(state_dir: Path, process: asyncio.subprocess.Process) -> dict[str, Any]:
    """The `ping` of the router we started, once it answers (polled: it is another process)."""
    router = BuiltinRouter(state_dir, timeout=5.0)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and process.returncode is None:
        with contextlib.suppress(ZerodownError):
            info = await router.ping()
            if info.get("pid") == process.pid:
                return info
        await asyncio.sleep(0.05)
    raise BenchError(f"the profiled router did not answer within {START_TIMEOUT:.0f} s")


# -- the run -----------------------------------------------------------------------------------


async def measure_all(workdir: Path, seconds: int, profile_seconds: int) -> RouterFigures:
    """Every path, one after another against the same nginx, then the profile."""
    (workdir / "nginx-temp").mkdir(exist_ok=True)
    paths: list[PathFigures] = []
    async with serving("nginx", workdir, nginx_command(workdir)) as nginx:
        paths.append(await measure_path(DIRECT, nginx.port, seconds, None, nginx.pid))
        async with zerodown_router(workdir, nginx.port) as router:
            paths.append(await measure_path(ZERODOWN, router.port, seconds, router.pid, nginx.pid))
        async with zerodown_pool(workdir, nginx.port) as workers:
            others = [w.pid for w in workers[1:]]
            paths.append(
                await measure_path(
                    ZERODOWN_POOL, workers[0].port, seconds, workers[0].pid, nginx.pid, others
                )
            )
        hand = ((HAPROXY_1, 1, None), (HAPROXY_DEFAULT, None, None),
                (HAPROXY_RETRY, None, ZERODOWN_RETRY_ON))  # fmt: skip
        for name, threads, retry_on in hand:
            command = haproxy_command(workdir, nginx.port, threads, retry_on)
            label = f"haproxy-{threads or 'default'}{'-retry' if retry_on else ''}"
            async with serving(label, workdir, command) as haproxy:
                paths.append(
                    await measure_path(name, haproxy.port, seconds, haproxy.pid, nginx.pid)
                )
        connections: dict[str, tuple[int, int]] = {}
        async with managed_haproxy(workdir, nginx.port) as managed:
            port, pid = managed.server.port, managed.server.pid
            paths.append(await measure_path(HAPROXY_MANAGED, port, seconds, pid, nginx.pid))
            connections[HAPROXY_MANAGED] = await managed.server_connections()
            await managed.reload()  # the same servers, now static: what dynamic servers cost
            paths.append(await measure_path(HAPROXY_RELOADED, port, seconds, pid, nginx.pid))
            connections[HAPROXY_RELOADED] = await managed.server_connections()
        profile = await profile_router(workdir, nginx.port, profile_seconds)
    return RouterFigures(
        {p.name: p for p in paths}, read_profile(profile), read_profile(profile, 3, by="tottime"),
        seconds, connections,
    )  # fmt: skip


async def run(*, quick: bool, machine: MachineFacts) -> Section:
    """Run the router benchmark (5 s loads with `quick`, else 10 s) and return its section."""
    seconds = 5 if quick else 10
    load = await wait_for_quiet_machine(progress, timeout=30.0 if quick else 180.0)
    started = datetime.now(UTC)
    workdir = Path(tempfile.mkdtemp(prefix="zerodown-bench-"))
    try:
        figures = await measure_all(workdir, seconds, profile_seconds=seconds)
    except BaseException:
        progress(f"failed; logs kept in {workdir}")
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    return build_section(figures, machine, started, quick=quick, load=load)


def build_section(
    figures: RouterFigures, machine: MachineFacts, started: datetime, *, quick: bool, load: float
) -> Section:
    """The RESULTS.md section: both tables, the goal verdict and what limits the router."""
    configurations = [name for name in (ZERODOWN, ZERODOWN_POOL) if name in figures.paths]
    verdicts = {name: _goal_met(figures, name) for name in configurations}
    met = None if None in verdicts.values() else any(verdicts.values())
    goal = (
        f"zerodown's throughput >= {THROUGHPUT_RATIO_GOAL}x HAProxy's (nbthread 1), with no "
        f"errors, and added p99 <= {ADDED_P99_GOAL * 1000:.0f} ms at 1,000 req/s "
        f"(measured: {_goal_figures(figures, verdicts)})"
    )
    if HAPROXY_MANAGED in figures.paths:
        managed_met, managed_figures = judge_managed(figures)
        met = both(met, managed_met)
        goal += (
            f"; zerodown-managed HAProxy within 10 % of the hand-configured one with the same "
            f"threads (default): throughput >= {MANAGED_THROUGHPUT_GOAL}x, no errors, added p99 "
            f"at most {MANAGED_P99_SLACK:.0%} or {HEY_RESOLUTION * 1000:.1f} ms (hey's "
            f"resolution) above its (measured: {managed_figures})"
        )
    throughput = Table(
        ("Path", "Requests/s", "p50", "p99", "Errors", "vs HAProxy 1 thread",
         "vs HAProxy default threads", "vs direct", "Proxy CPU per request"),
        tuple(_throughput_row(figures, p) for p in figures.paths.values()),
        caption=f"**Throughput** — `wrk -t1 -c{WRK_CONNECTIONS} -d{figures.seconds}s --latency`"
        f" (closed loop), after a {WARMUP_SECONDS} s warm-up:",
    )  # fmt: skip
    latency = Table(
        ("Path", "Achieved req/s", "p50", "p99", "Added p99 (vs direct)", "Errors"),
        tuple(_latency_row(figures, p) for p in figures.paths.values()),
        caption=_latency_caption(figures),
    )  # fmt: skip
    cpu = Table(
        ("Path", "Proxy", "nginx", "wrk", "Everything else", "Everything else during hey"),
        tuple(
            (p.name, "—" if p.proxy_cpu is None else f"{p.proxy_cpu:.2f}", f"{p.upstream_cpu:.2f}",
             f"{p.wrk_cpu:.2f}", f"{p.other_cpu:.2f}", f"{p.hey_other_cpu:.2f}")
            for p in figures.paths.values()
        ),
        caption=f"**CPU during the wrk run**, in cores busy (the machine has {machine.cores}); "
        "\"everything else\" is work that is not this benchmark's and makes a run noisy:",
    )  # fmt: skip
    return Section(
        key=KEY,
        title="Router: throughput and added latency",
        goal=goal,
        met=met,
        tables=(throughput, latency, cpu),
        limits=tuple(_limits(figures, machine)),
        measured_at=started,
        measured_on=machine.one_line() + (" (quick run)" if quick else ""),
        method=(
            'One nginx (1 worker, keep-alive, `return 200 "ok\\n"`, no access log) is the '
            "upstream of every path; the paths are measured one after another in this run. "
            "zerodown's router is its daemon started by `start_router_process` with one route and "
            f"one target, then a pool of {POOL_WORKERS} such daemons on one port (SO_REUSEPORT, "
            f"`router.workers: {POOL_WORKERS}`, started by `ensure_pool`); HAProxy 2.6 runs "
            "`mode http`, keep-alive on both sides, `http-reuse always`, once with `nbthread 1` "
            "(one zerodown worker is one process) and once with "
            f"its default threads (one per CPU, {machine.cores} here)"
            + (
                f", then with default threads and zerodown's `retry-on {ZERODOWN_RETRY_ON}` added"
                if HAPROXY_RETRY in figures.paths
                else ""
            )
            + (
                f", then as zerodown runs it: `router: {{backend: haproxy}}` in a zerodown.yml, "
                "opened by the control plane, with the route put up and "
                f"{MANAGED_TARGETS} targets (both this nginx) admitted by the engine's fleet "
                "exactly as a deploy does, and once more after a hitless reload of it"
                if HAPROXY_MANAGED in figures.paths
                else ""
            )
            + ". Everything listens on "
            f"127.0.0.1. The 1-minute load average just before the run was {load:.2f}."
        ),
    )


def both(first: bool | None, second: bool | None) -> bool | None:
    """Two verdicts together: not met if either is not, unjudged if either is unjudged."""
    if first is False or second is False:
        return False
    if first is None or second is None:
        return None
    return True


def judge_managed(figures: RouterFigures) -> tuple[bool | None, str]:
    """The zerodown-managed HAProxy against the hand-configured one with default threads (the
    managed configuration sets no nbthread): (verdict, the measured figures). None: no p99."""
    managed = figures.paths[HAPROXY_MANAGED]
    errors = managed.wrk.errors + managed.hey.errors
    ratio = figures.throughput_ratio(HAPROXY_DEFAULT, HAPROXY_MANAGED)
    added, hand_added = figures.added_p99(HAPROXY_MANAGED), figures.added_p99(HAPROXY_DEFAULT)
    text = (
        f"{ratio:.2f}x the throughput, added p99 {format_ms(added)} against "
        f"{format_ms(hand_added)}, {errors} errors"
    )
    if added is None or hand_added is None:
        return None, text
    allowed = hand_added + max(MANAGED_P99_SLACK * abs(hand_added), HEY_RESOLUTION)
    met = ratio >= MANAGED_THROUGHPUT_GOAL and added <= allowed + 1e-9 and errors == 0
    return met, text


def _managed_note(figures: RouterFigures) -> str:
    """How the zerodown-managed HAProxy differs from the hand-configured one, and what it cost."""
    managed, hand = figures.paths[HAPROXY_MANAGED], figures.paths[HAPROXY_DEFAULT]
    ratio = figures.throughput_ratio(HAPROXY_DEFAULT, HAPROXY_MANAGED)
    cpu = ""
    if managed.proxy_cpu is not None and hand.proxy_cpu is not None:
        cpu = f", {_cpu_us(managed):.1f} µs of CPU per request against {_cpu_us(hand):.1f} µs"
    return (
        f"**zerodown-managed HAProxy** ({ratio:.2f}x the hand-configured one's requests/s{cpu}) "
        "runs the configuration zerodown writes, not the minimal one: health checks on each "
        "server (`option httpchk` GET /health from the service's fastapi preset, `inter 5s "
        f"fastinter 100ms rise 1 fall 3`: {MANAGED_TARGETS} servers x one check per 5 s, "
        f"nothing next to the load); `balance leastconn` over {MANAGED_TARGETS} servers "
        "(least_inflight) instead of one server; the servers are dynamic (`add server` + "
        "`enable health` + `enable server` over the Runtime API, also written into the "
        "config) with `pool-max-conn -1 pool-purge-delay 5s`, the idle-connection defaults of "
        "a config-file server, which HAProxy 2.6 does not give a server made by `add server` "
        "(without them such a server opens one connection per request, 3x the CPU per request)"
        + _connections_note(figures, HAPROXY_MANAGED)
        + "; per request, the frontend sets a host variable and tests its route's ACLs "
        "(the preview header first, then the live backend), `option forwardfor` adds "
        "X-Forwarded-For, server connections are reused the default way (`http-reuse "
        f"safe`, not `always`), and `retry-on {ZERODOWN_RETRY_ON}` sends a request again "
        "when the instance died under it or closed the reused connection it went out on (as the "
        "built-in router does; a test kills an instance holding a request and the client gets "
        "another one's answer)"
        + _retry_note(figures)
        + ". It runs master-worker with a Runtime API socket, default threads."
        + _reloaded_note(figures)
    )


def _cpu_us(path: PathFigures) -> float:
    """The proxy's CPU per request under wrk, in µs (0 when it was not measured)."""
    return (path.proxy_cpu or 0.0) / path.wrk.requests_per_sec * 1e6


def _connections_note(figures: RouterFigures, name: str) -> str:
    """How many server connections HAProxy opened for the requests of the path `name`."""
    if name not in figures.connections:
        return ""
    opened, reused = figures.connections[name]
    sent = opened + reused
    share = f", {reused / sent:.2%} of them over a reused one" if sent else ""
    return f": its servers opened {opened:,} connections for {sent:,} requests{share}"


def _retry_note(figures: RouterFigures) -> str:
    """What the `retry-on` line alone costs the hand-configured HAProxy, and the managed one
    against that like-for-like configuration."""
    if HAPROXY_RETRY not in figures.paths:
        return ""
    hand, retry = figures.paths[HAPROXY_DEFAULT], figures.paths[HAPROXY_RETRY]
    alone = figures.throughput_ratio(HAPROXY_DEFAULT, HAPROXY_RETRY)
    cpu = ""
    if hand.proxy_cpu is not None and retry.proxy_cpu is not None:
        cpu = f", {_cpu_us(retry):.1f} µs of CPU per request against {_cpu_us(hand):.1f} µs"
    against = figures.throughput_ratio(HAPROXY_RETRY, HAPROXY_MANAGED)
    return (
        f". That line alone takes the hand-configured HAProxy to {alone:.2f}x its requests/s"
        f"{cpu}: for any retry beyond `conn-failure`, HAProxy 2.6 copies every request it sends "
        'into a retry buffer (a whole 16 KB buffer, its documented "performance impact"); '
        f"against the hand-configured one with that line, the managed one serves {against:.2f}x"
    )


def _reloaded_note(figures: RouterFigures) -> str:
    """What the same managed HAProxy served once a reload made its dynamic servers static."""
    if HAPROXY_RELOADED not in figures.paths:
        return ""
    managed = figures.paths[HAPROXY_MANAGED].wrk.requests_per_sec
    reloaded = figures.paths[HAPROXY_RELOADED].wrk.requests_per_sec
    hand = figures.throughput_ratio(HAPROXY_DEFAULT, HAPROXY_RELOADED)
    gain = reloaded / managed
    verdict = (
        "so most of the gap is what HAProxy's servers added with `add server` cost, not the "
        "configuration"
        if gain >= RELOAD_GAIN_NOTABLE
        else "so servers added with `add server` are not what the gap is made of"
    )
    return (
        f" After a hitless reload (`zerodown router restart`) the same {MANAGED_TARGETS} servers "
        f"come back from haproxy.cfg as static servers"
        + _connections_note(figures, HAPROXY_RELOADED)
        + f"; {reloaded:,.0f} req/s against {managed:,.0f} before ({gain:.2f}x; {hand:.2f}x the "
        f"hand-configured one), {verdict}."
    )


def _goal_met(figures: RouterFigures, name: str) -> bool | None:
    """Whether the router configuration `name` meets the goal (None: no p99 to judge)."""
    added = figures.added_p99(name)
    if added is None:
        return None
    ratio = figures.throughput_ratio(HAPROXY_1, name)
    errors = figures.paths[name].wrk.errors
    return ratio >= THROUGHPUT_RATIO_GOAL and added <= ADDED_P99_GOAL and errors == 0


def _goal_figures(figures: RouterFigures, verdicts: dict[str, bool | None]) -> str:
    """Each configuration's figures and which of them meets the goal (both, when measured)."""
    one = figures.throughput_ratio(HAPROXY_1)
    text = f"1 worker: {one:.2f}x, added p99 {format_ms(figures.added_p99(ZERODOWN))}"
    if ZERODOWN_POOL not in figures.paths:
        return text  # figures of a run without the pool
    pool_1 = figures.throughput_ratio(HAPROXY_1, ZERODOWN_POOL)
    pool_default = figures.throughput_ratio(HAPROXY_DEFAULT, ZERODOWN_POOL)
    labels = {ZERODOWN: "1 worker", ZERODOWN_POOL: f"{POOL_WORKERS} workers"}
    meeting = [labels[name] for name, met in verdicts.items() if met]
    return (
        f"{text}; {POOL_WORKERS} workers: {pool_1:.2f}x vs nbthread 1, {pool_default:.2f}x vs "
        f"default threads, added p99 {format_ms(figures.added_p99(ZERODOWN_POOL))}; met by: "
        + (", ".join(meeting) or "neither")
    )


def _latency_caption(figures: RouterFigures) -> str:
    hey = f"hey -z {figures.seconds}s -c {HEY_WORKERS} -q {HEY_RATE_PER_WORKER}"
    if figures.paths[DIRECT].hey.tool == "hey":
        return f"**Latency at a fixed 1,000 req/s** — `{hey}` (it prints latencies to 0.1 ms):"
    return (
        f"**Latency at a fixed 1,000 req/s** — hey is not installed, so the Python generator "
        f"in `benchmarks/processes.py` made the load of `{hey}`, its workers spread evenly "
        "(no bursts) and latency counted from the scheduled send time:"
    )


def _latency_row(figures: RouterFigures, path: PathFigures) -> tuple[str, ...]:
    added = "—" if path.name == DIRECT else format_ms(figures.added_p99(path.name))
    return (
        path.name, f"{path.hey.requests_per_sec:,.0f}", format_ms(path.hey.p50),
        format_ms(path.hey.p99), added, str(path.hey.errors),
    )  # fmt: skip


def _throughput_row(figures: RouterFigures, path: PathFigures) -> tuple[str, ...]:
    rps = path.wrk.requests_per_sec
    per_request = "—" if path.proxy_cpu is None else f"{path.proxy_cpu / rps * 1e6:.1f} µs"
    haproxy = figures.paths[HAPROXY_1].wrk.requests_per_sec
    haproxy_default = figures.paths[HAPROXY_DEFAULT].wrk.requests_per_sec
    direct = figures.paths[DIRECT].wrk.requests_per_sec
    return (
        path.name, f"{rps:,.0f}", format_ms(path.wrk.p50), format_ms(path.wrk.p99),
        str(path.wrk.errors), f"{rps / haproxy:.2f}x", f"{rps / haproxy_default:.2f}x",
        f"{rps / direct:.2f}x", per_request,
    )  # fmt: skip


def _limits(figures: RouterFigures, machine: MachineFacts) -> list[str]:
    zerodown, haproxy = figures.paths[ZERODOWN], figures.paths[HAPROXY_1]
    notes = [
        f"**Shared cores.** The machine has {machine.cores} cores and nothing is pinned: wrk/hey, "
        "the proxy under test and nginx share them (see the CPU table), so every proxy competes "
        "with its own load generator and upstream, and no proxy path can reach the direct "
        "figure here."
    ]
    repeats = sum(p.repeats for p in figures.paths.values())
    if repeats:
        notes.append(
            f"**Repeated runs.** Work outside the benchmark took {NOISY_CPU} cores or more during "
            f"{repeats} measurement(s); each was made again (at most {MAX_RUNS} runs) and the "
            "least disturbed run is shown."
        )
    noise = max(max(p.other_cpu, p.hey_other_cpu) for p in figures.paths.values())
    if noise >= NOISY_CPU:
        notes.append(
            f"**This run was disturbed:** work outside the benchmark used up to {noise:.2f} cores "
            "during a wrk run (see the CPU table), so the throughput figures are low and uneven; "
            "re-run on a quiet machine before comparing them with another run."
        )
    if zerodown.proxy_cpu is not None and haproxy.proxy_cpu is not None:
        zd_us = zerodown.proxy_cpu / zerodown.wrk.requests_per_sec * 1e6
        hp_us = haproxy.proxy_cpu / haproxy.wrk.requests_per_sec * 1e6
        bound = (
            "it is CPU-bound, so its throughput is one core divided by that cost"
            if zerodown.proxy_cpu >= 0.85
            else "it is not saturating a core, so the shared cores limit it as much as its code"
        )
        notes.append(
            f"**CPU per request.** zerodown's router is one Python process (asyncio on uvloop, "
            f"httptools): under wrk it used {zerodown.proxy_cpu:.2f} of a core, {zd_us:.1f} µs of "
            f"CPU per request, against {hp_us:.1f} µs for HAProxy with one thread; {bound}."
        )
    if figures.profile:
        own = ", ".join(f"`{line.function}` {line.tottime:.2f} s" for line in figures.profile_own)
        top = "\n".join(
            f"  {i}. `{line.function}` — {line.cumtime:.2f} s cumulative, {line.tottime:.2f} s "
            f"own, {line.calls} calls"
            for i, line in enumerate(figures.profile, 1)
        )
        notes.append(
            f"**Profile.** The router under `wrk` for {figures.seconds} s with cProfile (which "
            f"slows it down several times; the proportions are what count). Top 5 by cumulative "
            f"time, leaving out the frames that only start the process:\n{top}\n"
            f"  By own time: {own}. cProfile does not see into uvloop's C code: a socket write "
            "counts as own time of the Python function calling `transport.write` (on loopback "
            "the send also runs the receiver's network stack)."
        )
    if ZERODOWN_POOL in figures.paths:
        notes.append(_pool_note(figures, machine))
    if HAPROXY_MANAGED in figures.paths:
        notes.append(_managed_note(figures))
    notes.append(_fixed_rate_note(figures, machine))
    return notes


def _pool_note(figures: RouterFigures, machine: MachineFacts) -> str:
    """What a second worker bought in this run, and what else differed between the two runs."""
    one, pool = figures.paths[ZERODOWN], figures.paths[ZERODOWN_POOL]
    gain = pool.wrk.requests_per_sec / one.wrk.requests_per_sec
    cpu = ""
    if pool.proxy_cpu is not None:
        per_request = pool.proxy_cpu / pool.wrk.requests_per_sec * 1e6
        cpu = f" used {pool.proxy_cpu:.2f} cores together ({per_request:.1f} µs per request) and"
    note = (
        f"**{POOL_WORKERS} workers.** The pool's workers{cpu} served {gain:.2f}x one worker's "
        f"requests/s. On {machine.cores} cores shared with wrk ({pool.wrk_cpu:.2f} cores here) "
        f"and nginx ({pool.upstream_cpu:.2f}), a second worker can only use what the first "
        "leaves idle, so in a quiet run the pool gains less than 2x."
    )
    if abs(one.other_cpu - pool.other_cpu) >= NOISY_CPU:
        note += (
            f" Outside work differed between the two runs ({one.other_cpu:.2f} cores during one "
            f"worker's, {pool.other_cpu:.2f} during the pool's), so this ratio says as much "
            "about that work as about the pool."
        )
    return note


def _fixed_rate_note(figures: RouterFigures, machine: MachineFacts) -> str:
    zerodown, haproxy = figures.paths[ZERODOWN], figures.paths[HAPROXY_1]
    note = (
        f"**At 1,000 req/s** no process is near a full core; a proxy adds one more read and "
        f"write on each side and a turn of its event loop, on {machine.cores} cores shared with "
        "the load generator and nginx."
    )
    if zerodown.hey.tool != "hey" or zerodown.proxy_cpu is None or haproxy.proxy_cpu is None:
        return note
    zd_ms = HEY_WORKERS * zerodown.proxy_cpu / zerodown.wrk.requests_per_sec * 1000
    hp_ms = HEY_WORKERS * haproxy.proxy_cpu / haproxy.wrk.requests_per_sec * 1000
    return note + (
        f" hey starts its {HEY_WORKERS} workers together and each ticks every "
        f"{1000 / HEY_RATE_PER_WORKER:.0f} ms, so requests arrive in bursts of {HEY_WORKERS}, "
        "not one per millisecond. A single-threaded proxy answers a burst one request after "
        f"another: at its CPU cost per request the last of a burst waits about {zd_ms:.1f} ms "
        f"in zerodown ({hp_ms:.1f} ms in HAProxy). The rest of the added p99 is waiting for a "
        "core and pauses of the proxy itself; this run does not separate the two."
    )
