"""deploy stage: the `Deployments` seam the pipeline deploys through, and its implementation on
the deploy engine (verification runs inside the deployment as the engine's extensions)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from zerodown.config import LoadedConfig
from zerodown.domain.events import DeploymentObserver, DeploymentState
from zerodown.domain.records import DeploymentRecord
from zerodown.engine.deployer import DeployRequest
from zerodown.store.base import HistoryStore

if TYPE_CHECKING:
    from zerodown.control_plane import ControlPlane


class Deployments(Protocol):
    """Deploys one service revision to one environment and says how it ended."""

    async def deploy(
        self, service: str, environment: str, revision: str, actor: str
    ) -> DeploymentRecord: ...


class EngineDeployments:
    """`Deployments` on the deploy engine: opens the control plane (router, runtime, history)
    on first use and keeps it for the run."""

    def __init__(self, loaded: LoadedConfig, observers: Sequence[DeploymentObserver] = ()) -> None:
        self.loaded = loaded
        self.observers = list(observers)
        self._plane: ControlPlane | None = None

    async def deploy(
        self, service: str, environment: str, revision: str, actor: str
    ) -> DeploymentRecord:
        """Run one deployment to its end (rolled back on failure, as the engine does)."""
        from zerodown.control_plane import ControlPlane  # the router starts only for deploys

        if self._plane is None:
            self._plane = await ControlPlane.open(self.loaded, observers=self.observers)
        deployer = self._plane.deployer(self.observers)
        request = DeployRequest(
            service=service, environment=environment, revision=revision, actor=actor
        )
        return await deployer.deploy(request)

    async def close(self) -> None:
        """Release the control plane's history connection."""
        if self._plane is not None:
            await self._plane.close()
            self._plane = None


async def protected_revisions(
    store: HistoryStore, services: Sequence[str], environments: Sequence[str]
) -> set[str]:
    """Revisions retention must keep: what each service runs in each environment, its rollback
    target (the revision live before it), and anything a deployment is rolling out now."""
    keep: set[str] = set()
    for service in services:
        for environment in environments:
            live = await store.last_successful(service, environment)
            if live is not None:
                keep.add(live.revision)
                if live.previous_revision:
                    keep.add(live.previous_revision)
    for record in await store.unfinished():
        keep.add(record.revision)
        if record.previous_revision:
            keep.add(record.previous_revision)
    return keep


def deployment_succeeded(record: DeploymentRecord) -> bool:
    """True when the deployment ended with the new revision serving."""
    return record.state is DeploymentState.SUCCEEDED
