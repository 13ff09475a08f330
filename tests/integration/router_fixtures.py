"""Real processes for the router daemon's tests: example-app upstreams and router daemons."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from zerodown.routers.base import RouteSpec, TargetSpec
from zerodown.routers.builtin.client import BuiltinRouter, start_router_process, stop_router
from zerodown.routers.builtin.state import process_start_time

APP = Path(__file__).resolve().parents[2] / "examples" / "webapp" / "app.py"


def free_port() -> int:
    """A port the kernel just handed out for 127.0.0.1 (bound to port 0, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, every: float = 0.05
) -> float:
    """Poll `condition` (no event to await across processes) until true; seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(every)
    return time.monotonic() - started


def alive(pid: int) -> bool:
    """Whether process `pid` is running (zombies count as gone)."""
    return process_start_time(pid) is not None


@dataclass
class WebApp:
    """One example-app instance on its own port."""

    name: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        """The instance's process id."""
        return self.process.pid

    def target(self, service: str = "web", pool: str = "r1") -> TargetSpec:
        """This instance as a router target (revision r1, in pool `pool`)."""
        return TargetSpec(service, self.name, "127.0.0.1", self.port, revision="r1", pool=pool)

    def kill(self) -> None:
        """SIGKILL the instance and reap it."""
        self.process.kill()
        self.process.wait(timeout=10)


def spawn_webapp(name: str, port: int, **env: str) -> subprocess.Popen[bytes]:
    """Launch examples/webapp/app.py on `port` without waiting for it."""
    environ = {**os.environ, "PORT": str(port), "ZERODOWN_INSTANCE": name, **env}
    return subprocess.Popen(
        [sys.executable, str(APP)],
        env=environ,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def start_webapp(name: str, **env: str) -> WebApp:
    """Start examples/webapp/app.py on a free port and wait until it accepts connections."""
    port = free_port()
    process = spawn_webapp(name, port, **env)
    app = WebApp(name, port, process)

    def accepts() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"webapp {name} exited with {process.returncode}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    await wait_until(accepts, 20.0, f"webapp {name} on port {port}")
    return app


@dataclass
class Fleet:
    """Upstreams and router daemons started by one test; all stopped at its end."""

    state_dir: Path
    apps: list[WebApp] = field(default_factory=list)
    router_pids: set[int] = field(default_factory=set)

    @property
    def router(self) -> BuiltinRouter:
        """A client for this test's router."""
        return BuiltinRouter(self.state_dir)

    async def webapp(self, name: str, **env: str) -> WebApp:
        """Start one upstream instance."""
        app = await start_webapp(name, **env)
        self.apps.append(app)
        return app

    async def webapps(self, *names: str) -> list[WebApp]:
        """Start several upstream instances at once (they boot in parallel)."""
        return list(await asyncio.gather(*(self.webapp(name) for name in names)))

    async def start_router(self, listen: str = "127.0.0.1:0", grace: float = 20.0) -> str:
        """Start a router daemon; returns the address it serves traffic on."""
        info = await start_router_process(self.state_dir, [listen], grace=grace)
        self.router_pids.add(int(info["pid"]))
        return str(info["listen"][0])

    async def route_to(self, *apps: WebApp, route: RouteSpec | None = None) -> None:
        """Route service `web` to the given instances, marked healthy at once."""
        await self.router.apply_route(route or RouteSpec(service="web"))
        for app in apps:
            await self.router.add_target(app.target(), healthy=True)

    async def close(self) -> None:
        """Stop routers (SIGTERM, then SIGKILL) and kill upstreams."""
        with contextlib.suppress(Exception):
            await stop_router(self.state_dir, timeout=10.0)
        for pid in self.router_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for app in self.apps:
            if app.process.poll() is None:
                app.kill()


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    """A per-test fleet of real processes under a fresh state directory."""
    fleet = Fleet(tmp_path / "state")
    try:
        yield fleet
    finally:
        await fleet.close()
