"""The `Runtime` seam: how the control plane starts, stops and finds instances of a revision."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol, runtime_checkable

RestartPolicy = Literal["unless-stopped", "no"]


class InstanceState(StrEnum):
    """Lifecycle of one instance as its runtime sees it."""

    STARTING = "starting"  # process launched, not yet known to be up
    RUNNING = "running"
    RESTARTING = "restarting"  # crashed; the supervisor waits out its backoff
    STOPPING = "stopping"
    STOPPED = "stopped"  # stopped on purpose (or exited with restart policy "no")
    FAILED = "failed"  # the supervisor gave up or the instance cannot run


@dataclass(frozen=True)
class InstanceSpec:
    """What to run: one instance of one revision of a service.

    `env` may hold secrets: it is never printed (see `__repr__`) and never written to disk
    in plain text by a runtime.
    """

    service: str
    revision: str
    instance_id: str
    command: str  # run by /bin/sh -c, in `workdir`
    workdir: str
    env: Mapping[str, str] = field(default_factory=dict)
    port_env: str = "PORT"
    host: str = "127.0.0.1"
    port: int | None = None  # None: the runtime assigns a free port
    stop_timeout: float = 10.0
    memory_limit: int | None = None  # bytes; None: no limit
    restart: RestartPolicy = "unless-stopped"
    labels: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"InstanceSpec(service={self.service!r}, revision={self.revision!r}, "
            f"instance_id={self.instance_id!r}, command={self.command!r}, "
            f"env=<{len(self.env)} variables>)"
        )


@dataclass(frozen=True)
class InstanceInfo:
    """What a runtime knows of one instance right now."""

    instance_id: str
    service: str
    revision: str
    host: str
    port: int
    state: InstanceState
    pid: int | None = None  # the app's pid (or the container's), when known
    started_at: float | None = None  # unix time the current process started
    restarts: int = 0
    exit_code: int | None = None  # of the last exit, if any
    log_path: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@runtime_checkable
class Runtime(Protocol):
    """Starts instances that outlive the control plane, and finds them again after a restart."""

    name: str

    async def start(self, spec: InstanceSpec) -> InstanceInfo:
        """Launch the instance and return once its process runs (not once it is healthy)."""
        ...

    async def stop(self, instance_id: str, *, timeout: float | None = None) -> InstanceInfo:
        """SIGTERM (or equivalent), wait up to `timeout` (default: the spec's), then kill."""
        ...

    async def inspect(self, instance_id: str) -> InstanceInfo:
        """Current state of one instance; raises `InstanceNotFound`."""
        ...

    async def list(self, service: str | None = None) -> list[InstanceInfo]:
        """Every instance this runtime still knows, running or not (re-adoption starts here)."""
        ...

    async def remove(self, instance_id: str) -> None:
        """Forget a stopped instance (its files, its records). Running ones are refused.

        The output of one that crashed stays readable a while (see `list_exited`).
        """
        ...

    async def output_tail(
        self, instance_id: str, lines: int, *, max_bytes: int | None = None
    ) -> builtins.list[str]:
        """The instance's last `lines` lines of output (at most `max_bytes`), secrets masked.

        Works for an instance that just exited (all its output is in) and for one that crashed
        and was removed since; raises `InstanceNotFound` for any other.
        """
        ...

    async def list_exited(self, service: str | None = None) -> builtins.list[InstanceInfo]:
        """Removed instances that had crashed and whose output is still kept, newest first."""
        ...


@runtime_checkable
class AdoptsOrphans(Protocol):
    """A runtime whose instances can outlive their supervisor (a crash, `kill -9`): the control
    plane gives each such orphan a new one when it starts."""

    async def adopt_orphans(self) -> builtins.list[str]:
        """Supervise every instance whose supervisor died; the ids now supervised."""
        ...
