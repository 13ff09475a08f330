"""Extension points of a deployment: where secrets, alarms, verification and masking plug in.

The engine calls these Protocols and nothing else; each feature implements the ones it needs and
the control plane passes them to the `Deployer`:

- `EnvSource`: extra environment for the new instances (secrets), resolved once per deployment;
- `DeploymentGuard`: watches while the deployment runs and through its verification (alarms);
  raising fails the deployment, which rolls the fleet back;
- `Verifier`: runs once the new revision serves everything, before the deployment is marked
  succeeded (smoke checks, log scan, a bake window); raising fails it and rolls the fleet back;
- `Masker`: rewrites every event's text before it reaches the history or an observer (secrets).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from zerodown.config.model import EnvironmentConfig, ServiceConfig
from zerodown.domain.events import EventKind
from zerodown.domain.records import DeploymentRecord
from zerodown.routers.base import Router
from zerodown.runtimes.base import InstanceInfo, Runtime

Emit = Callable[[EventKind, str, dict[str, Any] | None], Awaitable[None]]


@dataclass(frozen=True)
class DeploymentContext:
    """What an extension may know of the deployment it serves."""

    record: DeploymentRecord  # id, service, environment, revision, previous revision, actor
    service: ServiceConfig
    environment: EnvironmentConfig
    route: str  # the router's name for this service in this environment
    runtime: Runtime
    router: Router
    emit: Emit  # record an event (DECISION, or a feature's own kind) in the deployment's history
    release_path: Path | None = None  # the exported revision (None before it is prepared)

    async def new_instances(self) -> list[InstanceInfo]:
        """Running instances this deployment started (the new revision)."""
        infos = await self.runtime.list(self.record.service)
        return [
            info
            for info in infos
            if info.labels.get("deployment") == self.record.id
            and info.labels.get("environment") == self.record.environment
        ]


class EnvSource(Protocol):
    """Extra environment variables for a deployment's instances (e.g. resolved secrets)."""

    async def environment(self, ctx: DeploymentContext) -> Mapping[str, str]: ...


class DeploymentGuard(Protocol):
    """Watches a running deployment; raise `zerodown.errors.ZerodownError` to fail it.

    `watch` runs concurrently with the deployment and its verifiers and is cancelled when they
    end; returning early just means there is nothing (more) to watch.
    """

    async def watch(self, ctx: DeploymentContext) -> None: ...


class Verifier(Protocol):
    """Checks the new revision once it serves all traffic; raise to fail the deployment."""

    async def verify(self, ctx: DeploymentContext) -> None: ...


class Masker(Protocol):
    """Replaces secret values in text with `****`."""

    def mask(self, text: str) -> str: ...


def mask_value(masker: Masker, value: Any) -> Any:
    """`value` with every string inside it masked (dicts and lists walked)."""
    if isinstance(value, str):
        return masker.mask(value)
    if isinstance(value, dict):
        return {key: mask_value(masker, item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(masker, item) for item in value]
    return value
