"""The history store seam: deployments, their events, and the per-service+environment lock.

The records it keeps are domain types (`zerodown.domain.records`), re-exported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from zerodown.domain.events import DeploymentEvent, DeploymentState
from zerodown.domain.records import DeploymentRecord, LockHolder

__all__ = ["DeploymentRecord", "HistoryStore", "LockHolder"]

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


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
