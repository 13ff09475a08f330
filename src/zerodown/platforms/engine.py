"""The engine platform: zerodown drives the rollout itself over a Runtime and a Router, with the
Deployer's strategies (what every service without `platform:` gets)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zerodown.engine.run import DeploymentRun

ReplaceFleet = Callable[["DeploymentRun"], Awaitable[None]]


class EnginePlatform:
    """The Deployer's build -> route -> strategy path and the run's fleet rollback, unchanged."""

    kind = "engine"

    def __init__(self, replace: ReplaceFleet) -> None:
        self._replace = replace

    async def roll_out(self, run: DeploymentRun) -> None:
        """Build, route and replace the fleet with the configured strategy."""
        await self._replace(run)

    async def fail(self, run: DeploymentRun, reason: str, cause: BaseException) -> None:
        """Roll the whole fleet back to the previous revision (or leave it, as configured)."""
        await run.fail(reason)
