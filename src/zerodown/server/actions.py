"""Deployments the HTTP API starts: run in the background of `zerodown serve`, one per service
and environment, registered where the local socket API (and so `zerodown abort`) finds them."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from zerodown.control_plane import ControlPlane
from zerodown.domain.events import DeploymentEvent, DeploymentObserver
from zerodown.domain.records import DeploymentRecord
from zerodown.engine.deployer import Deployer
from zerodown.errors import ConfigError, LockHeld, ZerodownError

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0  # resolving a revision (git) before the record exists; then 202 at once
SETTLE_TIMEOUT = 10.0  # a deployment that has ended releases its lock and notifies within this

Running = MutableMapping[tuple[str, str], Any]  # (service, environment) -> Deployer


class Conflict(ZerodownError):
    """The request collides with what runs now (a deployment in progress, a held lock)."""


@dataclass(frozen=True)
class Started:
    """A deployment the API started: its id, and its state when the answer was sent."""

    deployment_id: str
    state: str


class _FirstEvent:
    """Resolves a future with the deployment id at its first event (the record exists then)."""

    def __init__(self, future: asyncio.Future[DeploymentEvent]) -> None:
        self.future = future

    async def on_event(self, event: DeploymentEvent) -> None:
        if not self.future.done():
            self.future.set_result(event)


class DeploymentLauncher:
    """Starts deployments as background tasks of this process and aborts them."""

    def __init__(
        self,
        plane: ControlPlane,
        running: Running,
        observers: list[DeploymentObserver],
    ) -> None:
        self.plane = plane
        self.running = running
        self.observers = observers
        self._tasks: set[asyncio.Task[DeploymentRecord]] = set()
        # The task and deployment id of what runs per (service, environment), once recorded.
        self._deployments: dict[tuple[str, str], tuple[asyncio.Task[DeploymentRecord], str]] = {}

    async def start(
        self,
        service: str,
        environment: str,
        work: Callable[[Deployer], Awaitable[DeploymentRecord]],
    ) -> Started:
        """Run `work` in the background; return once the deployment is recorded."""
        key = (service, environment)
        if key in self.running:
            await self._settle(key)
        if key in self.running:
            raise Conflict(f"a deployment of {service}/{environment} is running: wait or abort it")
        loop = asyncio.get_running_loop()
        first: asyncio.Future[DeploymentEvent] = loop.create_future()
        deployer = self.plane.deployer([_FirstEvent(first), *self.observers])
        self.running[key] = deployer
        task: asyncio.Task[DeploymentRecord] = asyncio.ensure_future(work(deployer))
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._finished(key, deployer, t))
        both: set[asyncio.Future[Any]] = {first, task}
        await asyncio.wait(both, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if not first.done() and task.done():
            # Refused before anything was recorded: the lock is held, or bad input.
            if isinstance(task.exception(), LockHeld):
                raise Conflict(str(task.exception()))
            task.result()  # ConfigError and friends
        if not first.done():
            raise Conflict(f"the deployment of {service}/{environment} did not start in time")
        event = first.result()
        self._deployments[key] = (task, event.deployment_id)
        return Started(event.deployment_id, str(event.data.get("to") or "pending"))

    async def _settle(self, key: tuple[str, str]) -> None:
        """Let a deployment whose record already ended finish its task (it is releasing its lock
        and telling the observers): a client that saw it end may deploy again at once."""
        task, deployment_id = self._deployments.get(key, (None, None))
        if task is None or deployment_id is None or task.done():
            return
        if (await self.plane.store.get_deployment(deployment_id)).state.terminal:
            await asyncio.wait({task}, timeout=SETTLE_TIMEOUT)

    def _finished(self, key: tuple[str, str], deployer: Deployer, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if self._deployments.get(key, (None, None))[0] is task:
            del self._deployments[key]
        if self.running.get(key) is deployer:
            del self.running[key]
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, ZerodownError):
                log.error("API deployment of %s/%s failed", *key, exc_info=exc)

    def abort(self, service: str, environment: str, deployment_id: str, reason: str) -> bool:
        """Abort a deployment that runs in this process or in a CLI on this machine."""
        deployer = self.running.get((service, environment))
        if deployer is not None:
            deployer.abort(deployment_id, reason=reason)
            return True
        return False

    async def abort_elsewhere(self, service: str, environment: str, deployment_id: str) -> bool:
        """Ask the CLI process that holds the lock for this deployment to abort (SIGUSR1, as
        `zerodown abort` does); False when no live process runs it."""
        holder = await self.plane.store.lock_holder(service, environment)
        if holder is None or holder.deployment_id != deployment_id or holder.pid == os.getpid():
            return False
        try:
            os.kill(holder.pid, signal.SIGUSR1)
        except (ProcessLookupError, PermissionError):
            return False
        return True


def not_found_or_bad(exc: ConfigError) -> int:
    """The HTTP status of a ConfigError: 404 for an unknown name, 400 otherwise."""
    return 404 if "unknown" in exc.reason or "no service" in exc.reason else 400
