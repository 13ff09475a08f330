"""The `Runtime` seam: how the control plane starts, stops and finds instances of a revision.

An instance runs an artifact: a release directory (a command run there, as a process) or a
container image pinned by its manifest digest. A runtime says which kinds it runs
(`Runtime.artifacts`) and where each instance can be reached (`InstanceInfo.host/port`).
"""

from __future__ import annotations

import builtins
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Literal, Protocol, runtime_checkable

from zerodown.errors import ConfigError

RestartPolicy = Literal["unless-stopped", "no"]
# name[:port]/path@sha256:<64 hex>: what `docker pull` takes, and immutable.
_PINNED_REFERENCE = re.compile(r"[^@\s]+@sha256:[0-9a-f]{64}")


class ArtifactKind(StrEnum):
    """What a runtime can run."""

    DIRECTORY = "directory"  # a release directory and a command (processes)
    IMAGE = "image"  # a container image pinned by digest


@dataclass(frozen=True)
class ReleaseDirectory:
    """A release as a directory: `command` is run by /bin/sh -c in `workdir`."""

    command: str
    workdir: str

    kind: ClassVar[ArtifactKind] = ArtifactKind.DIRECTORY


@dataclass(frozen=True)
class ContainerImage:
    """A release as an image pinned by its manifest digest (`registry/name@sha256:...`).

    `command` (run by /bin/sh -c in the container) replaces the image's CMD when given.
    """

    reference: str
    command: str | None = None

    kind: ClassVar[ArtifactKind] = ArtifactKind.IMAGE

    def __post_init__(self) -> None:
        if not _PINNED_REFERENCE.fullmatch(self.reference):
            raise ConfigError(
                f"image {self.reference!r} is not pinned: write it as "
                "registry/name@sha256:<64 hex digits> (a tag can move; a digest cannot)",
                field="image",
            )

    @property
    def digest(self) -> str:
        """The manifest digest the reference pins (`sha256:...`)."""
        return self.reference.rsplit("@", 1)[1]


Artifact = ReleaseDirectory | ContainerImage


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
    artifact: Artifact
    env: Mapping[str, str] = field(default_factory=dict)
    port_env: str = "PORT"  # the variable that tells the app the port to listen on
    port: int | None = None  # None: the runtime chooses (and says where in InstanceInfo)
    stop_timeout: float = 10.0
    memory_limit: int | None = None  # bytes; None: no limit
    restart: RestartPolicy = "unless-stopped"
    labels: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"InstanceSpec(service={self.service!r}, revision={self.revision!r}, "
            f"instance_id={self.instance_id!r}, artifact={self.artifact!r}, "
            f"env=<{len(self.env)} variables>)"
        )


@dataclass(frozen=True)
class InstanceInfo:
    """What a runtime knows of one instance right now; `host:port` is where it can be reached."""

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
    labels: Mapping[str, str] = field(default_factory=dict)
    # The container's own HEALTHCHECK status (starting, healthy, unhealthy), when it has one:
    # shown to users; zerodown's health checks decide.
    health: str | None = None
    image: str | None = None  # the pinned image reference a container runs

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@runtime_checkable
class Runtime(Protocol):
    """Starts instances that outlive the control plane, and finds them again after a restart."""

    name: str
    artifacts: frozenset[ArtifactKind]  # what `start` accepts in `InstanceSpec.artifact`

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

    def logs(
        self, instance_id: str, *, since: float | None = None, follow: bool = False
    ) -> AsyncIterator[str]:
        """The instance's output lines (no line ends), secrets masked, oldest first.

        `since` (unix time) leaves out older output; a runtime that does not stamp lines may
        keep whole files written after it. `follow` keeps yielding new lines until the instance
        is removed or the caller stops iterating. Raises `InstanceNotFound` on the first step
        (a crashed instance that was removed is still found while its output is kept).
        """
        ...


@runtime_checkable
class AdoptsOrphans(Protocol):
    """A runtime whose instances can outlive their supervisor (a crash, `kill -9`): the control
    plane gives each such orphan a new one when it starts."""

    async def adopt_orphans(self) -> builtins.list[str]:
        """Supervise every instance whose supervisor died; the ids now supervised."""
        ...
