"""Approvals before a deploy: N distinct approvers and a wait timer (GitHub environments'
required reviewers + wait timer; the seeds' prod: 2 reviewers, 5 minutes)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from zerodown.clock import Clock
from zerodown.config.pipeline import ResolvedGates
from zerodown.errors import PipelineError
from zerodown.pipeline.history import PipelineHistory
from zerodown.pipeline.model import RunRecord, RunState

POLL = 0.25  # how often a waiting run looks for new approvals


class ApprovalBook(Protocol):
    """Where approvals are read (`PipelineHistory`; a dict in unit tests)."""

    async def approvers(self, run_id: str) -> list[str]: ...

    async def get_run(self, wanted: str) -> RunRecord: ...


@dataclass(frozen=True)
class ApprovalStatus:
    """Where a run's approval gate stands."""

    approvers: tuple[str, ...]
    required: int
    wait_left: float

    @property
    def open(self) -> bool:
        """True once enough distinct people approved and the wait timer ran out."""
        return len(self.approvers) >= self.required and self.wait_left <= 0

    def describe(self) -> str:
        """'1 of 2 approvals (alice); 120 s of the wait timer left'."""
        who = f" ({', '.join(self.approvers)})" if self.approvers else ""
        text = f"{len(self.approvers)} of {self.required} approvals{who}"
        if self.wait_left > 0:
            text += f"; {self.wait_left:.0f} s of the wait timer left"
        return text


async def approve(
    history: PipelineHistory, run_id: str, approver: str, *, now: float
) -> tuple[bool, list[str]]:
    """Record `approver`'s approval of a run: (new, all approvers so far). An approver counts
    once; a run that already ended cannot be approved."""
    run = await history.get_run(run_id)
    if run.state.terminal:
        raise PipelineError(f"run {run.id[:8]} has ended ({run.state}): nothing to approve")
    if not approver.strip():
        raise PipelineError("an approval needs the approver's name")
    added = await history.add_approval(run.id, approver.strip(), now=now)
    return added, await history.approvers(run.id)


async def wait_for_approval(
    history: ApprovalBook,
    run_id: str,
    gates: ResolvedGates,
    clock: Clock,
    *,
    on_status: Callable[[ApprovalStatus], Awaitable[None]],
) -> ApprovalStatus:
    """Wait until the gate opens; `on_status` hears each change. Raises `PipelineError` when
    the approval timeout passes, or when the run is cancelled meanwhile."""
    started = clock.monotonic()
    last: ApprovalStatus | None = None
    while True:
        waited = clock.monotonic() - started
        status = ApprovalStatus(
            tuple(await history.approvers(run_id)),
            gates.approvals,
            max(0.0, gates.wait_timer - waited),
        )
        if last is None or status.approvers != last.approvers:
            await on_status(status)
        last = status
        if status.open:
            return status
        run = await history.get_run(run_id)
        if run.cancel_requested or run.state is not RunState.WAITING:
            raise PipelineError(run.cancel_requested or f"run is {run.state}, not waiting")
        if waited >= gates.approval_timeout:
            raise PipelineError(
                f"not approved within {gates.approval_timeout:.0f} s ({status.describe()})"
            )
        await clock.sleep(POLL)
