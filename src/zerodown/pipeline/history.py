"""`PipelineHistory`: the pipeline's records in the history database (the tables of
`zerodown.store.pipeline_schema`), on the same engine as the deployments.

Steps that read then write (queueing a run and superseding older ones, taking an environment's
slot, entering the deploy phase) run in one write transaction, which SQLite begins IMMEDIATE, so
two processes never both win.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from zerodown.errors import StoreError
from zerodown.pipeline.model import Decision, JobRecord, JobState, LogLine, RunRecord, RunState
from zerodown.store.locking import process_start_ticks
from zerodown.store.pipeline_schema import (
    ArtifactRow,
    ArtifactTagRow,
    PipelineApprovalRow,
    PipelineDecisionRow,
    PipelineJobRow,
    PipelineLogRow,
    PipelineRunRow,
)
from zerodown.store.sql import SqlHistoryStore

T = TypeVar("T")
# The execution option `zerodown.store.sql` reads to begin a SQLite transaction IMMEDIATE.
_IMMEDIATE_OPTION = "zerodown_immediate"
_SLOT_STATES = [s.value for s in RunState if s.holds_slot]
_MIN_PREFIX = 4


def _record(row: PipelineRunRow) -> RunRecord:
    return RunRecord(
        id=row.id,
        branch=row.branch,
        sha=row.sha,
        environment=row.environment,
        state=RunState(row.state),
        trigger=row.trigger,
        actor=row.actor,
        created_at=row.created_at,
        inputs=dict(row.inputs or {}),
        started_at=row.started_at,
        finished_at=row.finished_at,
        reason=row.reason,
        cancel_requested=row.cancel_requested,
        commit_message=row.commit_message,
    )


def _job(row: PipelineJobRow) -> JobRecord:
    return JobRecord(
        run_id=row.run_id,
        name=row.name,
        kind=row.kind,
        state=JobState(row.state),
        started_at=row.started_at,
        finished_at=row.finished_at,
        exit_code=row.exit_code,
        command_seconds=row.command_seconds,
        summary=dict(row.summary or {}),
        reason=row.reason,
    )


def holder_is_gone(pid: int | None, start: int | None) -> bool:
    """True when the process that ran a run has exited (or its pid was reused)."""
    if pid is None:
        return False
    return process_start_ticks(pid) != start


class PipelineHistory:
    """Runs, jobs, logs, decisions, approvals and artifacts, stored next to the deployments."""

    def __init__(self, store: SqlHistoryStore) -> None:
        self.store = store
        self._reads = sessionmaker(store.engine, expire_on_commit=False)
        self._writes = sessionmaker(
            store.engine.execution_options(**{_IMMEDIATE_OPTION: True}), expire_on_commit=False
        )
        self._serial = threading.Lock()

    # -- runs -----------------------------------------------------------------------------------

    async def create_run(self, run: RunRecord, *, now: float) -> list[str]:
        """Queue `run` and supersede older runs of its environment that have not reached their
        deploy: queued ones end at once, running/waiting ones are asked to stop. Returns their
        ids."""

        def work(session: Session) -> list[str]:
            touched: list[str] = []
            if run.environment is not None:
                older = session.scalars(
                    sa.select(PipelineRunRow).where(
                        PipelineRunRow.environment == run.environment,
                        PipelineRunRow.state.in_(
                            [RunState.QUEUED.value, RunState.RUNNING.value, RunState.WAITING.value]
                        ),
                    )
                )
                why = f"superseded by run {run.id[:8]} ({run.sha[:10]}, newer commit)"
                for row in older:
                    touched.append(row.id)
                    if row.state == RunState.QUEUED.value:
                        row.state = RunState.SUPERSEDED.value
                        row.reason = why
                        row.finished_at = now
                    else:
                        row.cancel_requested = why
                    session.add(_decision_row(row.id, None, now, "superseded", why))
            session.add(
                PipelineRunRow(
                    id=run.id,
                    branch=run.branch,
                    sha=run.sha,
                    environment=run.environment,
                    state=run.state.value,
                    trigger=run.trigger,
                    actor=run.actor,
                    inputs=dict(run.inputs),
                    created_at=run.created_at,
                    commit_message=run.commit_message,
                )
            )
            return touched

        return await self._write(f"queue pipeline run {run.id}", work)

    async def get_run(self, wanted: str) -> RunRecord:
        """The run with this id or unique id prefix; `StoreError` if none or ambiguous."""

        def read(session: Session) -> RunRecord:
            row = session.get(PipelineRunRow, wanted)
            if row is not None:
                return _record(row)
            if len(wanted) < _MIN_PREFIX:
                raise StoreError(f"there is no pipeline run {wanted!r}: give at least 4 characters")
            rows = list(
                session.scalars(
                    sa.select(PipelineRunRow)
                    .where(PipelineRunRow.id.startswith(wanted, autoescape=True))
                    .limit(3)
                )
            )
            if len(rows) != 1:
                what = "no pipeline run" if not rows else "more than one pipeline run"
                raise StoreError(f"{what} has an id starting with {wanted!r}")
            return _record(rows[0])

        return await self._read(f"read pipeline run {wanted}", read)

    async def list_runs(
        self, *, environment: str | None = None, limit: int = 30
    ) -> list[RunRecord]:
        """Runs, newest first."""

        def read(session: Session) -> list[RunRecord]:
            query = sa.select(PipelineRunRow)
            if environment is not None:
                query = query.where(PipelineRunRow.environment == environment)
            query = query.order_by(PipelineRunRow.created_at.desc()).limit(limit)
            return [_record(row) for row in session.scalars(query)]

        return await self._read("list pipeline runs", read)

    async def update_run(self, run_id: str, **fields: Any) -> RunRecord:
        """Set the given columns (state as a `RunState`); return the run as stored."""

        def work(session: Session) -> RunRecord:
            row = _run_row(session, run_id)
            for name, value in fields.items():
                setattr(row, name, value.value if isinstance(value, RunState) else value)
            return _record(row)

        return await self._write(f"update pipeline run {run_id}", work)

    async def claim_slot(self, run_id: str, *, now: float) -> tuple[RunRecord, RunRecord | None]:
        """Take the run's environment slot if free: (run, None) when taken or not needed, or
        (run, the run that holds it). A holder whose process is gone is failed and its slot
        freed. A run that was superseded or cancelled meanwhile is returned as it is."""

        def work(session: Session) -> tuple[RunRecord, RunRecord | None]:
            row = _run_row(session, run_id)
            if row.state != RunState.QUEUED.value:
                return _record(row), None
            if row.cancel_requested:
                row.state = RunState.CANCELLED.value
                row.reason, row.finished_at = row.cancel_requested, now
                return _record(row), None
            if row.environment is not None:
                holders = session.scalars(
                    sa.select(PipelineRunRow).where(
                        PipelineRunRow.environment == row.environment,
                        PipelineRunRow.state.in_(_SLOT_STATES),
                        PipelineRunRow.id != run_id,
                    )
                )
                for holder in holders:
                    if not holder_is_gone(holder.holder_pid, holder.holder_start):
                        return _record(row), _record(holder)
                    holder.state = RunState.FAILED.value
                    holder.reason = "the process running it is gone (killed or crashed)"
                    holder.finished_at = now
            pid = os.getpid()
            row.state = RunState.RUNNING.value
            row.started_at = now
            row.holder_pid, row.holder_start = pid, process_start_ticks(pid)
            return _record(row), None

        return await self._write(f"start pipeline run {run_id}", work)

    async def enter_state(self, run_id: str, state: RunState) -> RunRecord:
        """Move a running run to `state` (waiting, deploying) unless a cancel was requested;
        the returned record says which happened."""

        def work(session: Session) -> RunRecord:
            row = _run_row(session, run_id)
            if row.cancel_requested is None and not RunState(row.state).terminal:
                row.state = state.value
            return _record(row)

        return await self._write(f"move pipeline run {run_id} to {state}", work)

    async def request_cancel(self, run_id: str, reason: str, *, now: float) -> RunRecord:
        """Ask a run to stop (a queued run ends at once; a deploying one finishes its deploy)."""

        def work(session: Session) -> RunRecord:
            row = _run_row(session, run_id)
            if RunState(row.state).terminal:
                return _record(row)
            if row.state == RunState.QUEUED.value:
                row.state, row.reason, row.finished_at = RunState.CANCELLED.value, reason, now
            else:
                row.cancel_requested = reason
            session.add(_decision_row(row.id, None, now, "cancel", reason))
            return _record(row)

        return await self._write(f"cancel pipeline run {run_id}", work)

    # -- jobs, logs, decisions ------------------------------------------------------------------

    async def save_job(self, job: JobRecord) -> None:
        """Insert or update one job of a run."""

        def work(session: Session) -> None:
            row = session.scalar(
                sa.select(PipelineJobRow).where(
                    PipelineJobRow.run_id == job.run_id, PipelineJobRow.name == job.name
                )
            )
            if row is None:
                row = PipelineJobRow(run_id=job.run_id, name=job.name)
                session.add(row)
            row.kind, row.state = job.kind, job.state.value
            row.started_at, row.finished_at = job.started_at, job.finished_at
            row.exit_code, row.command_seconds = job.exit_code, job.command_seconds
            row.summary, row.reason = dict(job.summary), job.reason

        await self._write(f"save job {job.name} of run {job.run_id}", work)

    async def jobs(self, run_id: str) -> list[JobRecord]:
        """The run's jobs, in the order they were first saved."""

        def read(session: Session) -> list[JobRecord]:
            query = (
                sa.select(PipelineJobRow)
                .where(PipelineJobRow.run_id == run_id)
                .order_by(PipelineJobRow.id)
            )
            return [_job(row) for row in session.scalars(query)]

        return await self._read(f"read the jobs of run {run_id}", read)

    async def append_logs(self, run_id: str, lines: Sequence[tuple[str, float, str]]) -> None:
        """Append (job, at, masked line) rows."""
        if not lines:
            return

        def work(session: Session) -> None:
            session.add_all(
                PipelineLogRow(run_id=run_id, job=job, at=at, line=line) for job, at, line in lines
            )

        await self._write(f"write the log of run {run_id}", work)

    async def logs(self, run_id: str, *, after: int = 0, limit: int = 5000) -> list[LogLine]:
        """Log lines with id > `after`, oldest first."""

        def read(session: Session) -> list[LogLine]:
            query = (
                sa.select(PipelineLogRow)
                .where(PipelineLogRow.run_id == run_id, PipelineLogRow.id > after)
                .order_by(PipelineLogRow.id)
                .limit(limit)
            )
            return [LogLine(r.id, r.job, r.at, r.line) for r in session.scalars(query)]

        return await self._read(f"read the log of run {run_id}", read)

    async def add_decision(self, decision: Decision) -> None:
        """Record a decision and its reason."""

        def work(session: Session) -> None:
            session.add(
                _decision_row(
                    decision.run_id, decision.job, decision.at, decision.decision, decision.reason
                )
            )

        await self._write(f"record a decision of run {decision.run_id}", work)

    async def decisions(self, run_id: str) -> list[Decision]:
        """The run's decisions, oldest first."""

        def read(session: Session) -> list[Decision]:
            query = (
                sa.select(PipelineDecisionRow)
                .where(PipelineDecisionRow.run_id == run_id)
                .order_by(PipelineDecisionRow.id)
            )
            return [
                Decision(r.run_id, r.job, r.at, r.decision, r.reason)
                for r in session.scalars(query)
            ]

        return await self._read(f"read the decisions of run {run_id}", read)

    # -- approvals ------------------------------------------------------------------------------

    async def add_approval(
        self, run_id: str, approver: str, *, now: float, comment: str | None = None
    ) -> bool:
        """Record `approver`'s approval; False if they had approved already."""

        def work(session: Session) -> bool:
            _run_row(session, run_id)
            exists = session.scalar(
                sa.select(PipelineApprovalRow.id).where(
                    PipelineApprovalRow.run_id == run_id, PipelineApprovalRow.approver == approver
                )
            )
            if exists is not None:
                return False
            session.add(
                PipelineApprovalRow(run_id=run_id, approver=approver, at=now, comment=comment)
            )
            return True

        return await self._write(f"record an approval of run {run_id}", work)

    async def approvers(self, run_id: str) -> list[str]:
        """Distinct approvers of the run, in approval order."""

        def read(session: Session) -> list[str]:
            query = (
                sa.select(PipelineApprovalRow.approver)
                .where(PipelineApprovalRow.run_id == run_id)
                .order_by(PipelineApprovalRow.id)
            )
            return list(session.scalars(query))

        return await self._read(f"read the approvals of run {run_id}", read)

    # -- artifacts ------------------------------------------------------------------------------

    async def save_artifact(self, row: ArtifactRow, tags: Iterable[str], *, now: float) -> None:
        """Record a published revision (replacing an earlier record of it) and point `tags` at
        it; a tag that named another revision (`latest`) moves."""
        values = {c.key: getattr(row, c.key) for c in ArtifactRow.__table__.columns}
        wanted = list(dict.fromkeys(tags))

        def work(session: Session) -> None:
            existing = session.get(ArtifactRow, values["revision"])
            if existing is None:
                session.add(ArtifactRow(**values))
            else:
                for key, value in values.items():
                    setattr(existing, key, value)
            session.flush()
            for tag in wanted:
                tag_row = session.get(ArtifactTagRow, tag)
                if tag_row is None:
                    session.add(
                        ArtifactTagRow(tag=tag, revision=values["revision"], created_at=now)
                    )
                else:
                    tag_row.revision, tag_row.created_at = values["revision"], now

        await self._write(f"record artifact {values['revision']}", work)

    async def artifacts(self) -> list[tuple[ArtifactRow, list[str]]]:
        """Every published revision with its tags, newest first."""

        def read(session: Session) -> list[tuple[ArtifactRow, list[str]]]:
            rows = list(
                session.scalars(sa.select(ArtifactRow).order_by(ArtifactRow.created_at.desc()))
            )
            tags: dict[str, list[str]] = {}
            for tag in session.scalars(sa.select(ArtifactTagRow).order_by(ArtifactTagRow.tag)):
                tags.setdefault(tag.revision, []).append(tag.tag)
            return [(row, tags.get(row.revision, [])) for row in rows]

        return await self._read("list artifacts", read)

    async def delete_artifact(self, revision: str) -> None:
        """Forget a published revision and its tags."""

        def work(session: Session) -> None:
            session.execute(sa.delete(ArtifactTagRow).where(ArtifactTagRow.revision == revision))
            session.execute(sa.delete(ArtifactRow).where(ArtifactRow.revision == revision))

        await self._write(f"delete artifact {revision}", work)

    # -- plumbing -------------------------------------------------------------------------------

    async def _read(self, doing: str, work: Callable[[Session], T]) -> T:
        def call() -> T:
            with self._reads() as session:
                return work(session)

        return await asyncio.to_thread(self._guarded, doing, call)

    async def _write(self, doing: str, work: Callable[[Session], T]) -> T:
        def call() -> T:
            with self._writes.begin() as session:
                return work(session)

        return await asyncio.to_thread(self._guarded, doing, call)

    def _guarded(self, doing: str, call: Callable[[], T]) -> T:
        with self._serial:
            try:
                return call()
            except IntegrityError as exc:
                raise StoreError(f"could not {doing}: {self.store.reason(exc)}") from exc
            except SQLAlchemyError as exc:
                raise StoreError(
                    f"the history database at {self.store.url} could not {doing}: "
                    f"{self.store.reason(exc)}"
                ) from exc


def _run_row(session: Session, run_id: str) -> PipelineRunRow:
    row = session.get(PipelineRunRow, run_id)
    if row is None:
        raise StoreError(f"there is no pipeline run {run_id}")
    return row


def _decision_row(
    run_id: str, job: str | None, at: float, decision: str, reason: str
) -> PipelineDecisionRow:
    return PipelineDecisionRow(run_id=run_id, job=job, at=at, decision=decision, reason=reason)
