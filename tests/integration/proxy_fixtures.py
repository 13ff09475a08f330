"""Fixtures for the built-in proxy's integration tests: real web apps, a real proxy, raw sockets."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from zerodown.routers.base import Balance, RouteSpec, TargetSpec
from zerodown.routers.builtin.proxy import ProxyServer, ProxySettings
from zerodown.routers.builtin.table import Route, RoutingTable, Target

REPO = Path(__file__).resolve().parents[2]
WEBAPP = REPO / "examples" / "webapp" / "app.py"


def free_port() -> int:
    """A port nothing listens on right now (bound to 0, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening_socket() -> socket.socket:
    """A bound, listening socket on a random port, as the router daemon would pass in."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


@dataclass
class WebApp:
    """The example web app running as a real subprocess."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def start_webapp(name: str, **env: str) -> WebApp:
    """Start examples/webapp/app.py on a free port; returns once it accepts connections."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(WEBAPP)],
        env={**os.environ, "PORT": str(port), "APP_VERSION": name, "GRACEFUL_SECONDS": "1", **env},
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"webapp {name} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return WebApp(name, port, proc)
        except OSError:
            time.sleep(0.05)  # a subprocess has no event to await: poll with a deadline
    proc.kill()
    raise RuntimeError(f"webapp {name} did not listen on {port} within 20 s")


@pytest.fixture(scope="module")
def webapps() -> Iterator[list[WebApp]]:
    """Two example apps, `a` and `b`, shared by a test module."""
    apps = [start_webapp("a"), start_webapp("b")]
    yield apps
    for app in apps:
        app.stop()


@dataclass
class Observed:
    """One `on_response` call."""

    service: str
    target: str | None
    status: int
    seconds: float
    upstream_error: bool


@dataclass
class RecordingObserver:
    """A ProxyObserver that records every call."""

    calls: list[Observed] = field(default_factory=list)

    def on_response(
        self, route: Route, target: Target | None, status: int, seconds: float, upstream_error: bool
    ) -> None:
        target_id = target.spec.target_id if target else None
        self.calls.append(Observed(route.spec.service, target_id, status, seconds, upstream_error))


@dataclass
class RunningProxy:
    """A ProxyServer serving in this test's loop, with its table and observer."""

    table: RoutingTable
    server: ProxyServer
    observer: RecordingObserver
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def route(
        self, service: str = "web", *, balance: Balance = "round_robin", drain_timeout: float = 30.0
    ) -> None:
        spec = RouteSpec(service=service, balance=balance, drain_timeout=drain_timeout)
        self.table.apply_route(spec)

    def target(
        self, target_id: str, port: int, *, service: str = "web", weight: int = 100
    ) -> Target:
        """A healthy target in a pool of its own (named like it) weighing `weight`."""
        spec = TargetSpec(service, target_id, "127.0.0.1", port, revision=target_id, pool=target_id)
        added = self.table.add_target(spec, healthy=True)
        self.table.set_pool_weights(service, {target_id: weight})
        return added


async def start_proxy(settings: ProxySettings | None = None) -> RunningProxy:
    """Start a ProxyServer on a port-0 socket in the running loop."""
    table = RoutingTable()
    observer = RecordingObserver()
    server = ProxyServer(table, settings or ProxySettings(), observer)
    sock = listening_socket()
    port = sock.getsockname()[1]
    await server.start([sock])
    return RunningProxy(table, server, observer, port)


@pytest.fixture
async def proxy() -> AsyncIterator[RunningProxy]:
    """A proxy with default settings and no routes."""
    running = await start_proxy()
    yield running
    await running.server.shutdown(grace=2.0)


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `condition` every 10 ms until true; fail after `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


async def raw_request(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send raw bytes, half-close nothing, read until the proxy closes; returns all bytes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await reader.read(-1)
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Read one response (Content-Length or chunked) from a raw connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")
        return status, headers, body
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body
