"""The `Platform` seam: one deployment's rollout, run by zerodown or by a managed platform.

The deployer keeps everything around it the same for every platform: the record and its state
machine, the lock, guards (alarms), aborts, history and observers. A platform only rolls the
release out (`roll_out`) and, when that failed, brings the service back (`fail`), recording both
through the run it is given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from zerodown.engine.run import DeploymentRun


class Platform(Protocol):
    """Rolls one deployment out and rolls it back; progress is recorded as the run's events."""

    @property
    def kind(self) -> str:
        """The platform's name in zerodown.yml (`engine` when no `platform:` is given)."""
        ...

    async def roll_out(self, run: DeploymentRun) -> None:
        """Deploy `run.record.revision`; return once it serves, raise a ZerodownError saying
        why it did not. Cancelled when the deployment is aborted or an alarm trips."""
        ...

    async def fail(self, run: DeploymentRun, reason: str, cause: BaseException) -> None:
        """The failure path: decide, roll back (or not), and move the run to a terminal state;
        `cause` is what ended the rollout (an abort, an alarm, the platform's own failure)."""
        ...


class ManagedPlatform(Platform, Protocol):
    """A platform that runs the rollout itself (ECS): it also ends a deployment whose control
    plane died, from what the deployment recorded and what the platform says now."""

    async def recover(self, run: DeploymentRun, reason: str) -> None:
        """Take over `run` (in progress or rolling back when its process died) and end it:
        succeeded if the platform completed it, else rolled back; `reason` says what died."""
        ...
