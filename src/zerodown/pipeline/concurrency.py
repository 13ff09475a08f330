"""One pipeline run per environment at a time, with GitHub's cancel-in-progress semantics: a
newer commit for an environment supersedes the older runs that have not started deploying
(queued ones end at once, running ones are stopped); a deploy in flight is never cancelled,
and the newer run waits for it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from zerodown.clock import Clock
from zerodown.errors import PipelineError
from zerodown.pipeline.history import PipelineHistory
from zerodown.pipeline.model import RunRecord

POLL = 0.2  # how often a queued run asks for its environment's slot


async def wait_for_slot(
    history: PipelineHistory,
    run_id: str,
    clock: Clock,
    *,
    timeout: float,
    on_wait: Callable[[RunRecord], Awaitable[None]],
) -> RunRecord:
    """Take the run's environment slot, waiting while another run holds it; returns the run
    (running, or already ended when superseded/cancelled while queued). `on_wait` hears which
    run it waits for, once per holder."""
    started = clock.monotonic()
    told: str | None = None
    while True:
        run, holder = await history.claim_slot(run_id, now=clock.time())
        if holder is None:
            return run
        if holder.id != told:
            told = holder.id
            await on_wait(holder)
        if clock.monotonic() - started > timeout:
            raise PipelineError(
                f"waited {timeout:.0f} s for run {holder.id[:8]} to leave {run.environment}"
            )
        await clock.sleep(POLL)


async def watch_for_cancel(
    history: PipelineHistory, run_id: str, clock: Clock, *, interval: float = 0.3
) -> str:
    """Return the reason once someone asks the run to stop (cancel or a newer commit)."""
    while True:  # bounded by the run: the runner cancels this watcher when the run ends
        run = await history.get_run(run_id)
        if run.cancel_requested:
            return run.cancel_requested
        await clock.sleep(interval)
