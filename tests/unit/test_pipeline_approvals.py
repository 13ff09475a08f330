"""The approval gate: N distinct approvers, the wait timer, the timeout, on a fake clock."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from zerodown.clock import FakeClock
from zerodown.config.pipeline import ResolvedGates
from zerodown.errors import PipelineError
from zerodown.pipeline.approvals import ApprovalStatus, wait_for_approval
from zerodown.pipeline.model import RunRecord, RunState

RUN = RunRecord("r1", "main", "a" * 40, "prod", RunState.WAITING, "cli", "dev", 0.0)


class Book:
    """Approvals in memory (the `ApprovalBook` seam)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.run = RUN

    async def approvers(self, run_id: str) -> list[str]:
        return list(dict.fromkeys(self.names))

    async def get_run(self, wanted: str) -> RunRecord:
        return self.run


def _gates(approvals: int, wait: float, timeout: float = 3600.0) -> ResolvedGates:
    return ResolvedGates(
        approvals=approvals, wait_timer=wait, scan_required=True, approval_timeout=timeout
    )


async def test_two_distinct_approvers_open_the_gate_and_a_repeat_does_not_count() -> None:
    clock, book, seen = FakeClock(), Book(), []

    async def on_status(status: ApprovalStatus) -> None:
        seen.append(status.approvers)

    task = asyncio.create_task(
        wait_for_approval(book, "r1", _gates(2, 0), clock, on_status=on_status)
    )
    await clock.settle()
    book.names += ["alice", "alice"]
    await clock.advance(1)
    assert not task.done()
    book.names.append("bob")
    await clock.advance(1)
    status = await task
    assert status.open and status.approvers == ("alice", "bob")
    assert seen == [(), ("alice",), ("alice", "bob")]


async def test_the_wait_timer_holds_the_gate_after_approvals() -> None:
    clock, book = FakeClock(), Book()
    book.names += ["alice", "bob"]

    async def on_status(status: ApprovalStatus) -> None:
        pass

    task = asyncio.create_task(
        wait_for_approval(book, "r1", _gates(2, 300), clock, on_status=on_status)
    )
    await clock.advance(299)
    assert not task.done()
    await clock.advance(2)
    assert (await task).open


async def test_no_approval_within_the_timeout_fails_the_gate() -> None:
    clock, book = FakeClock(), Book()

    async def on_status(status: ApprovalStatus) -> None:
        pass

    task = asyncio.create_task(
        wait_for_approval(book, "r1", _gates(1, 0, timeout=60), clock, on_status=on_status)
    )
    await clock.advance(61)
    with pytest.raises(PipelineError, match="not approved within 60 s"):
        await task


async def test_a_cancelled_run_stops_waiting() -> None:
    clock, book = FakeClock(), Book()

    async def on_status(status: ApprovalStatus) -> None:
        pass

    task = asyncio.create_task(
        wait_for_approval(book, "r1", _gates(2, 0), clock, on_status=on_status)
    )
    await clock.settle()
    book.run = replace(RUN, cancel_requested="superseded by run r2")
    await clock.advance(1)
    with pytest.raises(PipelineError, match="superseded"):
        await task


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, (2, 300.0)),  # the seeds' prod: two approvers, then five minutes
        ({"approvals": 0}, (0, 0.0)),  # no approvals: no silent five-minute wait either
        ({"approvals": 0, "wait_timer": "1m"}, (0, 60.0)),  # unless asked for
        ({"approvals": 1, "wait_timer": 0}, (1, 0.0)),
    ],
)
def test_the_prod_wait_timer_applies_only_with_approvals_unless_set(
    given: dict[str, object], expected: tuple[int, float]
) -> None:
    from zerodown.config.pipeline import PipelineConfig

    pipeline = PipelineConfig.model_validate(
        {"jobs": {"test": {"command": "true"}}, "environments": {"prod": given}}
    )
    gates = pipeline.gates("prod")
    assert (gates.approvals, gates.wait_timer) == expected
