"""The pipeline's tables: runs, their jobs, job logs (masked), decisions, approvals, and the
published artifacts with their tags. Built exactly so by migration 0005."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Double, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from zerodown.store.schema import ID, NAME, Base


def _run_fk() -> Any:
    return ForeignKey("pipeline_runs.id", ondelete="CASCADE")


class PipelineRunRow(Base):
    """One pipeline run: which commit, for which environment, how it ended and why."""

    __tablename__ = "pipeline_runs"
    __table_args__ = (
        Index("ix_pipeline_runs_environment_created_at", "environment", "created_at"),
        Index("ix_pipeline_runs_state", "state"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    branch: Mapped[str] = mapped_column(NAME)
    sha: Mapped[str] = mapped_column(String(64))
    environment: Mapped[str | None] = mapped_column(NAME)
    state: Mapped[str] = mapped_column(String(32))
    trigger: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(NAME)
    inputs: Mapped[dict[str, str]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Double)
    started_at: Mapped[float | None] = mapped_column(Double)
    finished_at: Mapped[float | None] = mapped_column(Double)
    reason: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[str | None] = mapped_column(Text)
    commit_message: Mapped[str | None] = mapped_column(Text)
    holder_pid: Mapped[int | None] = mapped_column(Integer)
    holder_start: Mapped[int | None] = mapped_column(BigInteger)


class PipelineJobRow(Base):
    """One job of a run."""

    __tablename__ = "pipeline_jobs"
    __table_args__ = (Index("ix_pipeline_jobs_run_id_name", "run_id", "name", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ID, _run_fk())
    name: Mapped[str] = mapped_column(NAME)
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[float | None] = mapped_column(Double)
    finished_at: Mapped[float | None] = mapped_column(Double)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    command_seconds: Mapped[float | None] = mapped_column(Double)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    reason: Mapped[str | None] = mapped_column(Text)


class PipelineLogRow(Base):
    """One line of a job's output, masked before it was written."""

    __tablename__ = "pipeline_logs"
    __table_args__ = (Index("ix_pipeline_logs_run_id_id", "run_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ID, _run_fk())
    job: Mapped[str] = mapped_column(NAME)
    at: Mapped[float] = mapped_column(Double)
    line: Mapped[str] = mapped_column(Text)


class PipelineDecisionRow(Base):
    """Something the pipeline decided, and why (gate refused, job skipped, run superseded)."""

    __tablename__ = "pipeline_decisions"
    __table_args__ = (Index("ix_pipeline_decisions_run_id", "run_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ID, _run_fk())
    job: Mapped[str | None] = mapped_column(NAME)
    at: Mapped[float] = mapped_column(Double)
    decision: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)


class PipelineApprovalRow(Base):
    """One approver's approval of a run (each approver counts once)."""

    __tablename__ = "pipeline_approvals"
    __table_args__ = (
        Index("ix_pipeline_approvals_run_id_approver", "run_id", "approver", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ID, _run_fk())
    approver: Mapped[str] = mapped_column(NAME)
    at: Mapped[float] = mapped_column(Double)
    comment: Mapped[str | None] = mapped_column(Text)


class ArtifactRow(Base):
    """A published revision: the content-hashed build of one commit in the artifact store."""

    __tablename__ = "pipeline_artifacts"
    __table_args__ = (Index("ix_pipeline_artifacts_created_at", "created_at"),)

    revision: Mapped[str] = mapped_column(String(64), primary_key=True)
    digest: Mapped[str] = mapped_column(String(80))
    location: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    run_id: Mapped[str | None] = mapped_column(ID)
    branch: Mapped[str | None] = mapped_column(NAME)
    environment: Mapped[str | None] = mapped_column(NAME)
    created_at: Mapped[float] = mapped_column(Double)


class ArtifactTagRow(Base):
    """A tag naming a published revision: its sha, `latest`, `vX.Y.Z`, `dev-<timestamp>`."""

    __tablename__ = "pipeline_tags"
    __table_args__ = (Index("ix_pipeline_tags_revision", "revision"),)

    tag: Mapped[str] = mapped_column(NAME, primary_key=True)
    revision: Mapped[str] = mapped_column(
        String(64), ForeignKey("pipeline_artifacts.revision", ondelete="CASCADE")
    )
    created_at: Mapped[float] = mapped_column(Double)
