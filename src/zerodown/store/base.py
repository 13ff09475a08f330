"""The history store seam: deployments, their events, and the per-service+environment lock."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from zerodown.engine.events import DeploymentEvent, DeploymentState

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


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


class HistoryStore(Protocol):
    """Durable history. SQLite by default, PostgreSQL by URL."""

    async def create_deployment(self, record: DeploymentRecord) -> None:
        """Insert a new deployment (state pending)."""
        ...

    async def update_deployment(
        self,
        deployment_id: str,
        *,
        state: DeploymentState | None = None,
        reason: str | None = None,
        started_at: float | None = None,
        finished_at: float | None = None,
        previous_revision: str | None = None,
    ) -> DeploymentRecord:
        """Change the given fields; return the record as stored now."""
        ...

    async def get_deployment(self, deployment_id: str) -> DeploymentRecord:
        """Raise `StoreError` if unknown (ids may be given as a unique prefix)."""
        ...

    async def list_deployments(
        self,
        *,
        service: str | None = None,
        environment: str | None = None,
        limit: int = 50,
    ) -> list[DeploymentRecord]:
        """Newest first."""
        ...

    async def last_successful(self, service: str, environment: str) -> DeploymentRecord | None:
        """The newest succeeded deployment (deploy or rollback): the revision that is 'good'."""
        ...

    async def unfinished(self) -> list[DeploymentRecord]:
        """Deployments not in a terminal state (crash recovery starts here)."""
        ...

    async def record_event(self, event: DeploymentEvent) -> None:
        """Append an event; derived tables (batches, instances, hook runs, health) follow it."""
        ...

    async def events(
        self, deployment_id: str, *, after: int = 0
    ) -> list[tuple[int, DeploymentEvent]]:
        """Events of a deployment with their sequence numbers, in order."""
        ...

    async def acquire_lock(self, service: str, environment: str, holder: LockHolder) -> None:
        """Take the lock or raise `LockHeld` naming the running deployment. A lock whose holder
        process is gone (pid dead or start time differs) is released and taken."""
        ...

    async def release_lock(self, service: str, environment: str, deployment_id: str) -> None:
        """Release if held by `deployment_id`; otherwise do nothing."""
        ...

    async def lock_holder(self, service: str, environment: str) -> LockHolder | None:
        """Who holds the lock now (stale holders included)."""
        ...

    def sql_engine(self) -> Engine | None:
        """The SQL database, for the features that keep their own tables next to the history
        (alarm history, metric rollups, deployment commands, the delivery log); None for a store
        without one (the in-memory test fakes)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
