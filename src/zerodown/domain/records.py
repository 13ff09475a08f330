"""What the history keeps of a deployment, and who holds a service+environment lock."""

from __future__ import annotations

from dataclasses import dataclass, field

from zerodown.domain.events import DeploymentState


@dataclass(frozen=True)
class DeploymentRecord:
    """One deployment as the history keeps it."""

    id: str
    service: str
    environment: str
    revision: str  # full git sha (or the label of an unsourced service)
    strategy: str
    state: DeploymentState
    actor: str
    created_at: float
    kind: str = "deploy"  # deploy | rollback (a manual `zerodown rollback`)
    previous_revision: str | None = None  # what was live before; the rollback target
    reason: str | None = None  # why it failed / rolled back
    started_at: float | None = None
    finished_at: float | None = None
    commit_message: str | None = None
    commit_time: float | None = None  # for lead time
    holder_pid: int | None = None  # the process running it (crash detection)
    holder_start: int | None = None  # that process's start time, so a reused pid never counts
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass(frozen=True)
class LockHolder:
    """Who holds a service+environment lock."""

    deployment_id: str
    pid: int
    pid_start: int  # process start time (clock ticks since boot) of `pid`
    hostname: str
    acquired_at: float
