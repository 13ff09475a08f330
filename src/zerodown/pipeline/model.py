"""The pipeline's runtime objects: runs, jobs, decisions, log lines, and the seams a run
talks through (notifier, log sink, masker)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class RunState(StrEnum):
    """Where a pipeline run is."""

    QUEUED = "queued"  # waiting for its environment's slot
    RUNNING = "running"  # jobs are running
    WAITING = "waiting"  # waiting for approvals / the wait timer before deploying
    DEPLOYING = "deploying"  # a deploy job runs: never cancelled from here on
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"  # a newer commit for the same environment replaced it

    @property
    def terminal(self) -> bool:
        """True once the run has ended."""
        return self in _TERMINAL

    @property
    def holds_slot(self) -> bool:
        """True while the run occupies its environment (one run per environment at a time)."""
        return self in (RunState.RUNNING, RunState.WAITING, RunState.DEPLOYING)


_TERMINAL = frozenset(
    {RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.SUPERSEDED}
)


class JobState(StrEnum):
    """Where one job of a run is."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # its `if` was false, a need did not succeed, or an input skipped it
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class RunRecord:
    """One pipeline run as the history keeps it."""

    id: str
    branch: str
    sha: str
    environment: str | None  # None: the branch deploys nowhere (jobs run, deploy jobs skip)
    state: RunState
    trigger: str  # cli | push | webhook | api
    actor: str
    created_at: float
    inputs: Mapping[str, str] = field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None
    reason: str | None = None
    cancel_requested: str | None = None
    commit_message: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (None until both happened)."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass(frozen=True)
class JobRecord:
    """One job of a run: state, timings and a kind-specific summary (test counts, findings)."""

    run_id: str
    name: str
    kind: str
    state: JobState
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    command_seconds: float | None = None  # time spent in the user's own command
    summary: Mapping[str, Any] = field(default_factory=dict)
    reason: str | None = None


@dataclass(frozen=True)
class Decision:
    """Something the pipeline decided and why."""

    run_id: str
    job: str | None
    at: float
    decision: str
    reason: str


@dataclass(frozen=True)
class LogLine:
    """One masked line of a job's output."""

    id: int
    job: str
    at: float
    line: str


@dataclass(frozen=True)
class PipelineNotice:
    """A pipeline happening worth telling people about (started, failed, approval needed...)."""

    kind: str  # pipeline_started | pipeline_succeeded | pipeline_failed | approval_needed | ...
    severity: str  # info | warning | critical
    run: RunRecord
    title: str
    text: str
    fields: Mapping[str, str] = field(default_factory=dict)


class PipelineNotifier(Protocol):
    """Where pipeline notices go; must not block the run for long nor raise."""

    async def notify(self, notice: PipelineNotice) -> None: ...


class RunListener(Protocol):
    """Follows a run live (the CLI prints it)."""

    def on_line(self, job: str, line: str) -> None: ...

    def on_job(self, job: JobRecord) -> None: ...

    def on_decision(self, decision: Decision) -> None: ...


class NullListener:
    """A listener that ignores everything."""

    def on_line(self, job: str, line: str) -> None:
        """Ignore a log line."""

    def on_job(self, job: JobRecord) -> None:
        """Ignore a job change."""

    def on_decision(self, decision: Decision) -> None:
        """Ignore a decision."""


class NullNotifier:
    """A notifier that tells no one (no notifier configured)."""

    async def notify(self, notice: PipelineNotice) -> None:
        """Drop the notice."""


class IdentityMasker:
    """A masker that masks nothing (no secrets module)."""

    def mask(self, text: str) -> str:
        """Return `text` unchanged."""
        return text
