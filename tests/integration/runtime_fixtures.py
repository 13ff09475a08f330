"""Helpers shared by the local runtime's integration tests (real processes, real sockets)."""

from __future__ import annotations

import asyncio
import shlex
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from zerodown.runtimes.base import InstanceSpec, ReleaseDirectory
from zerodown.runtimes.local import LocalRuntime, procinfo
from zerodown.runtimes.local.supervisor import read_supervisor

REPO = Path(__file__).resolve().parents[2]
WEBAPP = REPO / "examples" / "webapp" / "app.py"


def webapp_command() -> str:
    """The shell command that runs the sample web app with this interpreter."""
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(WEBAPP))}"


def webapp_spec(instance_id: str, **overrides: Any) -> InstanceSpec:
    """A spec running the sample web app as revision `rev-<instance_id>` of service `web`
    (`command=` / `workdir=` overrides go into its release directory)."""
    release = ReleaseDirectory(
        overrides.pop("command", webapp_command()), overrides.pop("workdir", str(REPO))
    )
    fields: dict[str, Any] = {
        "service": "web",
        "revision": f"rev-{instance_id}",
        "instance_id": instance_id,
        "artifact": release,
        "stop_timeout": 5.0,
    }
    fields.update(overrides)
    return InstanceSpec(**fields)


def shell_spec(instance_id: str, command: str, workdir: Path, **overrides: Any) -> InstanceSpec:
    """A spec running a tiny `sh -c` command as service `sh`."""
    fields: dict[str, Any] = {
        "service": "sh",
        "revision": "r1",
        "instance_id": instance_id,
        "artifact": ReleaseDirectory(command, str(workdir)),
        "stop_timeout": 2.0,
    }
    fields.update(overrides)
    return InstanceSpec(**fields)


async def get_root(port: int, timeout: float = 20.0) -> dict[str, Any]:
    """GET / on 127.0.0.1:port, retrying until the app listens (bounded by `timeout`)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            try:
                response = await client.get(f"http://127.0.0.1:{port}/")
                response.raise_for_status()
                body: dict[str, Any] = response.json()
                return body
            except httpx.HTTPError:
                if time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(0.05)


async def eventually(
    probe: Callable[[], Awaitable[bool]], timeout: float = 20.0, interval: float = 0.05
) -> None:
    """Poll the async `probe` until it returns True; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def alive_pids(pids: list[int]) -> list[int]:
    """The pids (or process groups of those pids) that still have a live process."""
    left = []
    for pid in pids:
        stat = procinfo.read_stat(pid)
        if (stat is not None and stat.state != "Z") or procinfo.group_members(pid):
            left.append(pid)
    return left


def files_under(root: Path) -> dict[str, bytes]:
    """Every file below `root` by relative path (and by bare name), with its content."""
    files: dict[str, bytes] = {}
    for path in root.rglob("*"):
        if path.is_file():
            try:
                content = path.read_bytes()
            except FileNotFoundError:
                continue  # rotated or replaced between listing and reading
            files[str(path.relative_to(root))] = content
            files[path.name] = content
    return files


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """The runtime's state directory of one test."""
    return tmp_path / "state"


@pytest.fixture
async def runtime(state_dir: Path) -> AsyncIterator[LocalRuntime]:
    """A runtime whose instances (and every supervisor they ever had) are stopped and checked
    gone when the test ends, however it ends."""
    runtime = LocalRuntime(state_dir)
    yield runtime
    cleaner = LocalRuntime(state_dir)  # a fresh one: the test may have left no runtime behind
    pids: list[int] = []
    for info in await cleaner.list():
        supervisor = read_supervisor(state_dir / "instances" / info.instance_id)
        pids += [p for p in (info.pid, supervisor and supervisor.pid) if p]
        await cleaner.stop(info.instance_id, timeout=1.0)
    assert alive_pids(pids) == []
