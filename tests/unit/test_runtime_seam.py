"""The Runtime seam: artifacts (directory or pinned image), and logs read only through
`Runtime.logs` by the log scan and the alarms' log metric filters."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.unit.fakes import FakeRouter, FakeRuntime

from zerodown.alarms.logwatch import InstanceLogWatch
from zerodown.clock import Clock
from zerodown.config.model import EnvironmentConfig, ServiceConfig
from zerodown.config.verify import LogScanConfig
from zerodown.engine.fleet import Fleet
from zerodown.errors import ConfigError
from zerodown.metrics.logfilters import ERROR_LINES
from zerodown.runtimes.base import (
    ArtifactKind,
    ContainerImage,
    InstanceInfo,
    InstanceState,
    ReleaseDirectory,
)
from zerodown.verify.logscan import scan_logs

DIGEST = "sha256:" + "ab" * 32
PINNED = f"127.0.0.1:5000/web@{DIGEST}"


class _NoSleep:
    """A clock whose sleeps return at once (the log scan's bake window)."""

    def time(self) -> float:
        return 1_000_000.0

    def monotonic(self) -> float:
        return 0.0

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


@dataclass
class _Release:
    sha: str
    path: Path
    image: str | None = None


class _Sink:
    async def emit(self, kind: Any, message: str, data: dict[str, Any] | None = None) -> None:
        return None

    def emit_soon(self, kind: Any, message: str, data: dict[str, Any] | None = None) -> None:
        return None


def _fleet(runtime: FakeRuntime, run: str | None = "python app.py") -> Fleet:
    service = ServiceConfig.model_validate(
        {"run": run}
        if run
        else {"build": {"image": {"preset": "fastapi", "registry": {"address": "127.0.0.1:5000"}}}}
    )
    return Fleet(
        service_name="api",
        service=service,
        environment_name="prod",
        environment=EnvironmentConfig(),
        runtime=runtime,
        router=FakeRouter(),
        deployment_id="d1",
        sink=_Sink(),
    )


def _info(instance_id: str, environment: str = "prod") -> InstanceInfo:
    return InstanceInfo(
        instance_id, "api", "v2", "127.0.0.1", 1, InstanceState.RUNNING,
        labels={"environment": environment},
    )  # fmt: skip


def test_an_image_must_be_pinned_by_digest() -> None:
    """A tag can move; the seam refuses anything but name@sha256:<64 hex>."""
    assert ContainerImage(PINNED).digest == DIGEST
    with pytest.raises(ConfigError, match="not pinned"):
        ContainerImage("127.0.0.1:5000/web:latest")


def test_the_fleet_gives_an_image_runtime_the_image_and_a_process_runtime_the_directory(
    tmp_path: Path,
) -> None:
    images_only = FakeRuntime(artifacts=frozenset({ArtifactKind.IMAGE}))
    processes = FakeRuntime(artifacts=frozenset({ArtifactKind.DIRECTORY}))
    with_image = _Release("v2", tmp_path, PINNED)
    spec = _fleet(images_only).instance_spec(with_image, "api-1")
    assert spec.artifact == ContainerImage(PINNED, "python app.py")
    assert _fleet(processes).instance_spec(with_image, "api-1").artifact == ReleaseDirectory(
        "python app.py", str(tmp_path)
    )


def test_an_image_runtime_given_a_release_without_an_image_says_what_to_configure(
    tmp_path: Path,
) -> None:
    images_only = FakeRuntime(artifacts=frozenset({ArtifactKind.IMAGE}))
    with pytest.raises(ConfigError, match=r"no image for revision v2.*build: \{image"):
        _fleet(images_only).instance_spec(_Release("v2", tmp_path), "api-1")


def test_an_image_service_needs_no_run_but_a_process_runtime_does(tmp_path: Path) -> None:
    processes = FakeRuntime(artifacts=frozenset({ArtifactKind.DIRECTORY}))
    with pytest.raises(ConfigError, match="no `run:` command"):
        _fleet(processes, run=None).instance_spec(_Release("v2", tmp_path, PINNED), "api-1")
    images = FakeRuntime(artifacts=frozenset({ArtifactKind.IMAGE}))
    spec = _fleet(images, run=None).instance_spec(_Release("v2", tmp_path, PINNED), "api-1")
    assert spec.artifact == ContainerImage(PINNED, None)


async def test_the_log_scan_counts_what_the_runtime_returns_with_no_file_anywhere() -> None:
    """The scan reads Runtime.logs: a runtime with no log file (containers) is scanned too."""
    runtime = FakeRuntime(output={"api-1": ["ok", "ERROR one", "ERROR two"], "api-2": ["fine"]})
    runtime.instances = {i: _info(i) for i in ("api-1", "api-2")}
    config = LogScanConfig.model_validate({"window": 0, "filters": [{"preset": "error-lines"}]})
    clock: Clock = _NoSleep()  # type: ignore[assignment]
    [result] = await scan_logs(config, runtime, list(runtime.instances.values()), since=None,
                               clock=clock)  # fmt: skip
    assert not result.ok
    assert result.numbers["count"] == 2
    assert "ERROR one" in result.detail


class _FollowingRuntime(FakeRuntime):
    """A runtime whose logs(follow=True) yields what `write` adds, from the moment it is asked."""

    def __init__(self) -> None:
        super().__init__()
        self.queues: dict[str, builtins.list[asyncio.Queue[str]]] = {}
        self.followed = asyncio.Event()

    def write(self, instance_id: str, line: str) -> None:
        for queue in self.queues.get(instance_id, []):
            queue.put_nowait(line)

    async def logs(
        self, instance_id: str, *, since: float | None = None, follow: bool = False
    ) -> AsyncIterator[str]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        self.queues.setdefault(instance_id, []).append(queue)
        self.followed.set()
        while follow:
            yield await queue.get()


async def test_the_alarm_log_watch_counts_only_lines_written_while_it_watches() -> None:
    runtime = _FollowingRuntime()
    watch = InstanceLogWatch(runtime, [ERROR_LINES])
    try:
        assert watch.poll([_info("api-1")]) == {"error_lines": 0}
        await asyncio.wait_for(runtime.followed.wait(), 5)
        runtime.write("api-1", "ERROR boom")
        runtime.write("api-1", "fine")
        await asyncio.sleep(0)  # the follower takes the lines
        assert watch.poll([_info("api-1")]) == {"error_lines": 1}
        assert watch.poll([_info("api-1")]) == {"error_lines": 0}  # counted once
    finally:
        await watch.close()
    assert all(not q.qsize() for qs in runtime.queues.values() for q in qs)
