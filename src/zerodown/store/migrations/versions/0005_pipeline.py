"""The pipeline: runs, jobs, masked job logs, decisions, approvals, artifacts and their tags.

Revision ID: 0005
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(length=64)
NAME = sa.String(length=200)


def _run_id() -> sa.Column[str]:
    return sa.Column("run_id", ID, nullable=False)


def _run_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["run_id"],
        ["pipeline_runs.id"],
        name=op.f(f"fk_{table}_run_id_pipeline_runs"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    """Create the pipeline's tables and indexes."""
    op.create_table(
        "pipeline_runs",
        sa.Column("id", ID, nullable=False),
        sa.Column("branch", NAME, nullable=False),
        sa.Column("sha", sa.String(length=64), nullable=False),
        sa.Column("environment", NAME, nullable=True),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("actor", NAME, nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=True),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Text(), nullable=True),
        sa.Column("commit_message", sa.Text(), nullable=True),
        sa.Column("holder_pid", sa.Integer(), nullable=True),
        sa.Column("holder_start", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipeline_runs")),
    )
    op.create_index(
        "ix_pipeline_runs_environment_created_at",
        "pipeline_runs",
        ["environment", "created_at"],
    )
    op.create_index("ix_pipeline_runs_state", "pipeline_runs", ["state"])

    op.create_table(
        "pipeline_jobs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _run_id(),
        sa.Column("name", NAME, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=True),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("command_seconds", sa.Double(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        _run_fk("pipeline_jobs"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipeline_jobs")),
    )
    op.create_index(
        "ix_pipeline_jobs_run_id_name", "pipeline_jobs", ["run_id", "name"], unique=True
    )

    op.create_table(
        "pipeline_logs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _run_id(),
        sa.Column("job", NAME, nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        _run_fk("pipeline_logs"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipeline_logs")),
    )
    op.create_index("ix_pipeline_logs_run_id_id", "pipeline_logs", ["run_id", "id"])

    op.create_table(
        "pipeline_decisions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _run_id(),
        sa.Column("job", NAME, nullable=True),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("decision", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        _run_fk("pipeline_decisions"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipeline_decisions")),
    )
    op.create_index("ix_pipeline_decisions_run_id", "pipeline_decisions", ["run_id"])

    op.create_table(
        "pipeline_approvals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _run_id(),
        sa.Column("approver", NAME, nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        _run_fk("pipeline_approvals"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipeline_approvals")),
    )
    op.create_index(
        "ix_pipeline_approvals_run_id_approver",
        "pipeline_approvals",
        ["run_id", "approver"],
        unique=True,
    )

    op.create_table(
        "pipeline_artifacts",
        sa.Column("revision", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.String(length=80), nullable=False),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("run_id", ID, nullable=True),
        sa.Column("branch", NAME, nullable=True),
        sa.Column("environment", NAME, nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("revision", name=op.f("pk_pipeline_artifacts")),
    )
    op.create_index("ix_pipeline_artifacts_created_at", "pipeline_artifacts", ["created_at"])

    op.create_table(
        "pipeline_tags",
        sa.Column("tag", NAME, nullable=False),
        sa.Column("revision", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["revision"],
            ["pipeline_artifacts.revision"],
            name=op.f("fk_pipeline_tags_revision_pipeline_artifacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tag", name=op.f("pk_pipeline_tags")),
    )
    op.create_index("ix_pipeline_tags_revision", "pipeline_tags", ["revision"])


def downgrade() -> None:
    """Drop the pipeline's tables (its history is lost)."""
    for table in (
        "pipeline_tags",
        "pipeline_artifacts",
        "pipeline_approvals",
        "pipeline_decisions",
        "pipeline_logs",
        "pipeline_jobs",
        "pipeline_runs",
    ):
        op.drop_table(table)
