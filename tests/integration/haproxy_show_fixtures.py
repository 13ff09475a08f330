"""Pieces of issue 11's "Show it" runs on HAProxy: the deploy tests' `Stack` in front of a real
HAProxy, the service's zerodown.yml, a load loop that times the 5xx its clients see, an SSE
stream and a WebSocket that record when they received data and when they closed, HAProxy's
servers as the Runtime API lists them, and the `zerodown` command line run beside the test.

Every process a fixture starts is stopped at its end, even when the test fails; every loop is
bounded in count and time.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.integration.test_deploy_local import WEBAPP, Stack
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from zerodown.config.loader import LoadedConfig, load_config
from zerodown.config.router import HaproxyRouterConfig
from zerodown.domain.events import DeploymentEvent, EventKind
from zerodown.routers.haproxy.runtime_api import RuntimeApi, SocketAddress
from zerodown.routers.haproxy.state import HaproxyPaths
from zerodown.routers.registry import router_backend
from zerodown.runtimes.local import LocalRuntime
from zerodown.server.socket_api import SOCKET_NAME
from zerodown.store.sql import SqlHistoryStore, open_store

from router_fixtures import free_port  # isort: skip - sibling module

ROUTE = "api.prod"  # service api, environment prod: its HAProxy backend
DRAIN_TIMEOUT = 5.0
HARD_STOP_AFTER = 30.0  # above the drain timeout: a reload's old worker keeps its streams
# Revision `bad` answers 20 % of `/` with 500 (its health check passes).
RUN = (
    'if [ "$ZERODOWN_REVISION" = bad ]; then export ERROR_RATE=0.2; fi; '
    f"exec {sys.executable} app.py"
)


def write_config(
    stack: Stack,
    *,
    instances: int = 2,
    strategy: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> LoadedConfig:
    """zerodown.yml beside the stack's state dir: service `api` behind HAProxy, environment
    `prod` (the `zerodown` command line run in `stack.root` reads the same file)."""
    data = {
        "state_dir": "state",
        "router": {
            "backend": "haproxy",
            "listen": [f"127.0.0.1:{stack.port}"],
            "hard_stop_after": HARD_STOP_AFTER,
        },
        "services": {
            "api": {
                "workdir": str(WEBAPP),
                "run": RUN,
                "instances": instances,
                "drain_timeout": DRAIN_TIMEOUT,
                "stop_timeout": 5,
                "env": env or {},
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
        "environments": {"prod": {"strategy": strategy or {}}},
        "server": {"listen": f"127.0.0.1:{free_port()}"},  # serve's dashboard, if one runs
    }
    path = stack.root / "zerodown.yml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path, environ={})


@pytest.fixture
async def haproxy_stack() -> AsyncIterator[Stack]:
    """A state dir with a real HAProxy (hard-stop-after 30 s), a local runtime and a SQLite
    store; instances, HAProxy and the store are stopped at the end."""
    # A short path: unix sockets under it must fit in sun_path (108 bytes).
    root = Path(tempfile.mkdtemp(prefix="zd-h-", dir="/tmp"))
    state = root / "state"
    port = free_port()
    listen = [f"127.0.0.1:{port}"]
    backend = router_backend(HaproxyRouterConfig(listen=listen, hard_stop_after=HARD_STOP_AFTER))
    runtime = LocalRuntime(state)
    store: SqlHistoryStore | None = None
    try:
        router = await backend.open(state, listen)
        store = open_store(f"sqlite:///{state / 'history.db'}")
        yield Stack(root, port, runtime, router, store, "haproxy")
    finally:
        for info in await runtime.list():
            await runtime.stop(info.instance_id, timeout=2)
            await runtime.remove(info.instance_id)
        await backend.stop(state)
        if store is not None:
            await store.close()
        shutil.rmtree(root, ignore_errors=True)


# -- the command line -------------------------------------------------------------------------


def spawn_zerodown(stack: Stack, *args: str, log: str = "zerodown.log") -> subprocess.Popen[bytes]:
    """`zerodown <args>` in the stack's directory (its zerodown.yml); its output goes to the
    file `log` there (a pipe nobody reads could fill and block it)."""
    with (stack.root / log).open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "zerodown", *args],
            cwd=stack.root,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def output_of(stack: Stack, log: str = "zerodown.log") -> str:
    """What the `zerodown` processes spawned with `log` printed."""
    path = stack.root / log
    return path.read_text(errors="replace") if path.exists() else ""


async def start_serve(stack: Stack, timeout: float = 60) -> subprocess.Popen[bytes]:
    """`zerodown serve`, once its control socket answers (a socket file a SIGKILLed serve left
    behind refuses connections, so the file alone proves nothing)."""
    serve = spawn_zerodown(stack, "serve", log="serve.log")
    path = str(stack.root / "state" / SOCKET_NAME)
    deadline = time.monotonic() + timeout
    while True:
        if serve.poll() is not None:
            raise AssertionError(
                f"serve exited with {serve.returncode}: {output_of(stack, 'serve.log')}"
            )
        with socket.socket(socket.AF_UNIX) as probe:
            if probe.connect_ex(path) == 0:
                return serve
        if time.monotonic() > deadline:
            await stop_process(serve)
            raise AssertionError(f"serve did not answer within {timeout} s")
        await asyncio.sleep(0.1)  # another process: poll with a deadline


async def stop_process(process: subprocess.Popen[bytes], timeout: float = 150) -> None:
    """SIGINT (serve rolls back what it runs, bounded), SIGKILL if it has not ended in
    `timeout` s."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        await asyncio.to_thread(process.wait, timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        await asyncio.to_thread(process.wait, 10)


async def run_zerodown(stack: Stack, *args: str, timeout: float = 60) -> tuple[int, str]:
    """Run `zerodown <args>` to its end (killed after `timeout`); its exit code and output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "zerodown",
        *args,
        cwd=stack.root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


# -- HAProxy as the Runtime API sees it -------------------------------------------------------


@dataclass(frozen=True)
class ServerState:
    """One server of `show servers state` (HAProxy's own view, not zerodown's routes.json)."""

    name: str
    address: str  # host:port
    op_state: int  # 0 stopped, 1 starting, 2 running, 3 stopping
    admin_state: int  # bit flags: 0x01 forced maint, 0x08 forced drain, ...
    weight: int


def admin_api(stack: Stack) -> RuntimeApi:
    """A client of the stack's HAProxy Runtime API (its admin socket)."""
    return RuntimeApi(
        SocketAddress(unix=str(HaproxyPaths.under(stack.root / "state").admin_socket))
    )


async def haproxy_servers(stack: Stack, backend: str = ROUTE) -> dict[str, ServerState]:
    """The servers HAProxy has in `backend` now, by name."""
    api = admin_api(stack)
    text = await api.run(f"show servers state {backend}")
    servers = {}
    for line in text.splitlines():
        words = line.split()
        # be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight ...
        # ... srv_port is the 19th field
        if len(words) < 19 or line.startswith("#") or not words[0].isdigit():
            continue
        servers[words[3]] = ServerState(
            name=words[3],
            address=f"{words[4]}:{words[18]}",
            op_state=int(words[5]),
            admin_state=int(words[6]),
            weight=int(words[7]),
        )
    return servers


async def session_server(stack: Stack, local_port: int) -> str:
    """The server HAProxy's current worker sends the client connection from 127.0.0.1:`port`
    to (`show sess`)."""
    api = admin_api(stack)
    text = await api.run("show sess")
    for line in text.splitlines():
        if f" src=127.0.0.1:{local_port} " in line and " srv=" in line:
            return line.split(" srv=", 1)[1].split()[0]
    raise AssertionError(f"no session from port {local_port} in `show sess`:\n{text}")


# -- traffic ----------------------------------------------------------------------------------


@dataclass
class TimedReport:
    """What a timed load run saw: counts, and when its clients saw the first and last 5xx."""

    sent: int = 0
    ok: int = 0
    errors_5xx: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # transport errors
    versions: Counter[str] = field(default_factory=Counter)
    first_5xx: float | None = None  # time.monotonic()
    last_5xx: float | None = None
    seconds: float = 0.0

    @property
    def window_5xx(self) -> float:
        """Seconds from the first 5xx to the last one clients saw (0: none or one)."""
        if self.first_5xx is None or self.last_5xx is None:
            return 0.0
        return self.last_5xx - self.first_5xx


async def timed_load(
    url: str,
    stop: asyncio.Event,
    *,
    connections: int = 10,
    max_seconds: float = 90.0,
    max_requests: int = 200_000,
) -> TimedReport:
    """Closed-loop GET / from `connections` clients until `stop`, `max_seconds` or
    `max_requests`, noting when each 5xx answer arrived."""
    report = TimedReport()
    started = time.monotonic()
    deadline = started + max_seconds
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, timeout=15, limits=limits) as client:

        async def worker() -> None:
            while not stop.is_set() and time.monotonic() < deadline:
                if report.sent >= max_requests:
                    return
                report.sent += 1
                try:
                    response = await client.get("/")
                except httpx.HTTPError as exc:
                    report.failures[f"{type(exc).__name__}: {exc}"[:120]] += 1
                    continue
                if response.status_code >= 500:
                    now = time.monotonic()
                    report.errors_5xx += 1
                    report.first_5xx = report.first_5xx or now
                    report.last_5xx = now
                    continue
                report.ok += 1
                report.versions[str(response.json().get("version", "?"))] += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
    report.seconds = time.monotonic() - started
    return report


@dataclass
class LongConnection:
    """An SSE stream or a WebSocket: wall-clock times of the data it received, and when and
    why it ended."""

    kind: str
    local_port: int = 0  # the client's end of the TCP connection, once connected
    received: list[float] = field(default_factory=list)  # time.time(), as events' `at`
    closed_at: float | None = None
    ended_by: str = ""

    def received_after(self, moment: float) -> int:
        """How many pieces of data arrived after `moment` (wall clock)."""
        return sum(1 for at in self.received if at > moment)


async def hold_sse(url: str, connection: LongConnection, *, events: int = 1200) -> None:
    """Read /sse (`events` events, 0.1 s apart: 2 minutes at most) until it ends or is cut."""
    try:
        async with (
            httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(15, read=10)) as client,
            client.stream("GET", f"/sse?count={events}&interval=0.1") as response,
        ):
            assert response.status_code == 200, response.status_code
            local = response.extensions["network_stream"].get_extra_info("client_addr")
            connection.local_port = int(local[1])
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    connection.received.append(time.time())
        connection.ended_by = "the stream's end"
    except httpx.HTTPError as exc:
        connection.ended_by = f"{type(exc).__name__}: {exc}"[:120]
    finally:
        connection.closed_at = time.time()


async def hold_websocket(url: str, connection: LongConnection, *, messages: int = 1200) -> None:
    """Send a message every 0.1 s on /ws and read its echo (`messages` at most: 2 minutes)
    until the socket closes."""
    try:
        async with ws_connect(url.replace("http://", "ws://") + "/ws", open_timeout=10) as ws:
            connection.local_port = int(ws.local_address[1])
            for number in range(messages):
                await ws.send(str(number))
                assert await asyncio.wait_for(ws.recv(), 10) == str(number)
                connection.received.append(time.time())
                await asyncio.sleep(0.1)  # a message rate, not a wait for an event
        connection.ended_by = "all messages echoed"
    except (ConnectionClosed, OSError, TimeoutError) as exc:
        connection.ended_by = f"{type(exc).__name__}: {exc}"[:120]
    finally:
        connection.closed_at = time.time()


async def first_data(connections: list[LongConnection], timeout: float = 10) -> None:
    """Wait until every connection received something (they run in other tasks)."""
    deadline = time.monotonic() + timeout
    while not all(c.received for c in connections):
        ended = [c for c in connections if c.closed_at is not None]
        if ended:
            raise AssertionError(f"{ended[0].kind} ended before any data: {ended[0].ended_by}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no data on every connection within {timeout} s")
        await asyncio.sleep(0.05)  # filled by other tasks: poll with a deadline


class EventTap:
    """A DeploymentObserver that keeps every event and runs a callback once on the first event
    of a kind (in its own task: the deployment does not wait for it)."""

    def __init__(self) -> None:
        self.events: list[DeploymentEvent] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self._triggers: dict[EventKind, Callable[[], Awaitable[Any]]] = {}

    def on_first(self, kind: EventKind, callback: Callable[[], Awaitable[Any]]) -> None:
        """Run `callback()` (a coroutine function) when the first `kind` event arrives."""
        self._triggers[kind] = callback

    async def on_event(self, event: DeploymentEvent) -> None:
        """Keep the event; start its trigger if it has one."""
        self.events.append(event)
        callback = self._triggers.pop(event.kind, None)
        if callback is not None:
            self.tasks.append(asyncio.ensure_future(callback()))

    async def finish(self) -> list[Any]:
        """The triggered callbacks' results (their exceptions raised)."""
        return list(await asyncio.gather(*self.tasks))

    def cancel(self) -> None:
        """Cancel triggered callbacks still running (a test that failed midway)."""
        for task in self.tasks:
            task.cancel()


async def wait_until_ended(store: SqlHistoryStore, deployment_id: str, timeout: float) -> None:
    """Until the deployment is no longer in progress (another process ends it)."""
    deadline = time.monotonic() + timeout
    while (await store.get_deployment(deployment_id)).state == "in_progress":
        if time.monotonic() > deadline:
            raise AssertionError(f"deployment {deployment_id} still in progress after {timeout} s")
        await asyncio.sleep(0.1)  # another process writes the store: poll with a deadline


async def wait_for_event(
    store: SqlHistoryStore, revision: str, kind: EventKind, timeout: float
) -> str:
    """The id of the newest deployment of `revision` once it has an event of `kind` (polled:
    another process writes it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        newest = await store.list_deployments(service="api", limit=1)
        events = await store.events(newest[0].id) if newest else []
        if newest and newest[0].revision == revision and any(e.kind is kind for _, e in events):
            return newest[0].id
        await asyncio.sleep(0.05)  # another process writes the store: poll with a deadline
    raise AssertionError(f"no {kind} event of {revision} within {timeout} s")
