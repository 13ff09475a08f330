"""`DeploymentRun`: one deployment's moving parts (its record, events, fleet and state changes),
and `RunServices`, the little it needs of whoever runs it.

The `Deployer` decides what happens and in which order; a run carries it out and records it. A
run never sees the deployer: it gets its collaborators as constructor arguments, and the deployer
changes a run only through its methods.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from zerodown.clock import Clock
from zerodown.config.model import EnvironmentConfig, ServiceConfig
from zerodown.domain.events import DeploymentEvent, DeploymentState, EventKind, check_transition
from zerodown.domain.records import DeploymentRecord
from zerodown.engine.extensions import DeploymentContext, Masker
from zerodown.engine.fleet import Fleet, ReleaseSource
from zerodown.engine.recorder import EventRecorder
from zerodown.errors import ConfigError, DeploymentAborted
from zerodown.routers.base import Router
from zerodown.runtimes.base import Runtime
from zerodown.store.base import HistoryStore

log = logging.getLogger(__name__)

MAX_BUILD_LINES = 1000  # build output recorded per deployment; the build log keeps the rest


class PrepareRevision(Protocol):
    """Resolve, export and build one revision of a service (the deployer knows where)."""

    def __call__(
        self,
        service_name: str,
        service: ServiceConfig,
        revision: str,
        on_line: Callable[[str], None],
    ) -> Awaitable[ReleaseSource]: ...


@dataclass(frozen=True)
class RunServices:
    """What a `DeploymentRun` uses besides its own parts: the history, the backends its
    extensions see, the clock, how to prepare a revision, and the secret masker."""

    store: HistoryStore
    runtime: Runtime
    router: Router
    clock: Clock
    prepare: PrepareRevision
    masker: Masker | None = None


async def run_shielded(work: Awaitable[None]) -> bool:
    """Run `work` to its end even if the caller is cancelled meanwhile (a second Ctrl-C).

    Returns True when a cancellation arrived while waiting; the caller re-raises it once the work
    is done, so a rollback is never left half-way.
    """
    task = asyncio.ensure_future(work)
    interrupted = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                break
            interrupted = True
    task.result()
    return interrupted


def describe_failure(exc: BaseException) -> str:
    """The sentence a deployment records as the reason it failed."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled (Ctrl-C or the control plane stopped)"
    if isinstance(exc, DeploymentAborted):
        return str(exc) or "aborted by a user"
    if isinstance(exc, ConfigError):
        return exc.reason
    text = str(exc) or type(exc).__name__
    if type(exc).__module__ == "zerodown.errors":
        return text
    return f"unexpected error: {type(exc).__name__}: {text}"


class DeploymentRun:
    """One deployment's moving parts: its record, its events, its fleet, its state changes."""

    def __init__(
        self,
        services: RunServices,
        record: DeploymentRecord,
        service: ServiceConfig,
        environment: EnvironmentConfig,
        *,
        recorder: EventRecorder,
        fleet: Fleet,
    ) -> None:
        self.services = services
        self.record = record
        self.service = service
        self.environment = environment
        self._recorder = recorder  # the fleet reports to it too
        self.fleet = fleet
        self.previous: str | None = record.previous_revision
        self.restore_count = service.instances

    @property
    def state(self) -> DeploymentState:
        """The deployment's state as last recorded."""
        return self.record.state

    def context(self, release_path: Path | None = None) -> DeploymentContext:
        """What extensions (secrets, alarms, verification) see of this deployment."""
        return DeploymentContext(
            record=self.record,
            service=self.service,
            environment=self.environment,
            route=self.fleet.route_name,
            runtime=self.services.runtime,
            router=self.services.router,
            emit=self._recorder.emit,
            release_path=release_path,
        )

    async def emit(self, kind: EventKind, message: str, data: dict[str, Any] | None = None) -> None:
        """Record an event of this deployment (stored and observed before this returns)."""
        await self._recorder.emit(kind, message, data)

    async def record_event(self, event: DeploymentEvent) -> None:
        """Record an event made elsewhere (a hook's output)."""
        await self._recorder.record(event)

    async def close(self) -> None:
        """Wait until every event is written; the run records nothing more."""
        await self._recorder.close()

    async def note_previous(self, previous: str | None, serving: int) -> None:
        """Store what ran before this deployment (the rollback target) and remember how many
        instances served it (`serving`, or the service's count when none did): a rollback
        restores that many."""
        self.previous = previous
        self.restore_count = serving or self.service.instances
        self.record = await self.services.store.update_deployment(
            self.record.id, previous_revision=previous
        )

    async def transition(self, wanted: DeploymentState, **fields: Any) -> None:
        """Move to `wanted` (checked against the table), store it, and record a STATE event."""
        current = self.record.state
        check_transition(current, wanted)
        masker = self.services.masker
        if wanted.terminal:
            fields.setdefault("finished_at", self.services.clock.time())
        if fields.get("reason") and masker is not None:  # e.g. a hook's last line
            fields["reason"] = masker.mask(fields["reason"])
        self.record = await self.services.store.update_deployment(
            self.record.id, state=wanted, **fields
        )
        message = f"{current.value} -> {wanted.value}"
        if fields.get("reason"):
            message += f": {fields['reason']}"
        await self._recorder.emit(
            EventKind.STATE, message, {"from": current.value, "to": wanted.value}
        )

    async def prepare(self, revision: str) -> ReleaseSource:
        """Resolve/export/build `revision` (BUILD event); BuildFailed on failure."""
        clock = self.services.clock
        started = clock.monotonic()
        lines = 0

        def on_line(line: str) -> None:
            nonlocal lines
            lines += 1
            if lines <= MAX_BUILD_LINES:
                self._recorder.emit_soon(EventKind.BUILD_OUTPUT, line, {"line": line})

        release = await self.services.prepare(self.record.service, self.service, revision, on_line)
        seconds = clock.monotonic() - started
        cached = bool(getattr(release, "cached", False))
        await self._recorder.emit(
            EventKind.BUILD,
            f"release {release.sha[:12]} ready in {seconds:.2f} s"
            + (" (cached)" if cached else ""),
            {"sha": release.sha, "cached": cached, "seconds": seconds, "path": str(release.path)},
        )
        return release

    async def fail(self, reason: str) -> None:
        """The failure path: decide, roll the whole fleet back (or not), record how it ended."""
        rollback = self.environment.auto_rollback
        await self._recorder.emit(
            EventKind.DECISION,
            f"deployment failed: {reason}",
            {"reason": reason, "auto_rollback": rollback, "previous_revision": self.previous},
        )
        if not self.fleet.touched and self.state is DeploymentState.IN_PROGRESS:
            await self.transition(DeploymentState.FAILED, reason=f"{reason}; nothing was changed")
            return
        if not rollback and self.state is DeploymentState.IN_PROGRESS:
            await self.transition(
                DeploymentState.FAILED,
                reason=f"{reason}; auto_rollback is off for {self.record.environment}: "
                "the fleet was left as it is",
            )
            return
        await self.roll_back(reason)

    async def roll_back(self, reason: str, *, ended: str | None = None) -> None:
        """Restore the previous revision everywhere (or clear a first deploy) and record it.

        `ended`: the reason to record when the rollback succeeds (default: why, and to what).
        """
        if self.state is not DeploymentState.ROLLING_BACK:
            await self.transition(DeploymentState.ROLLING_BACK, reason=reason)
        clock = self.services.clock
        started = clock.monotonic()
        target = self.previous
        await self._recorder.emit(
            EventKind.ROLLBACK_STARTED,
            f"rolling back to {target[:12]}" if target else "removing the new instances",
            {"to_revision": target, "reason": reason},
        )
        try:
            if target is None:
                await self.fleet.clear(self.record.id)
            else:
                release = await self.prepare(target)
                await self.fleet.restore(release, self.restore_count, undo=self.record.id)
        except Exception as exc:
            log.exception("rollback of %s failed", self.record.id)
            what = f"to {target[:12]}" if target else "of the new instances"
            await self.transition(
                DeploymentState.FAILED,
                reason=f"{reason}; the rollback {what} failed too: {describe_failure(exc)}",
            )
            return
        seconds = clock.monotonic() - started
        await self._recorder.emit(
            EventKind.ROLLBACK_FINISHED,
            f"rollback finished in {seconds:.2f} s",
            {"to_revision": target, "seconds": seconds},
        )
        if target is None:
            await self.transition(
                DeploymentState.FAILED,
                reason=f"{reason}; nothing was running before; nothing is running now",
            )
        else:
            final = ended or f"{reason}; rolled back to {target[:12]}"
            await self.transition(DeploymentState.ROLLED_BACK, reason=final)
