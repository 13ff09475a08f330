"""The initial history schema: deployments, events, the tables derived from events, and locks.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(length=64)
NAME = sa.String(length=200)


def _deployment_id() -> sa.Column[str]:
    return sa.Column("deployment_id", ID, nullable=False)


def _deployment_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["deployment_id"],
        ["deployments.id"],
        name=op.f(f"fk_{table}_deployment_id_deployments"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    """Create every table and index of the first schema."""
    op.create_table(
        "deployments",
        sa.Column("id", ID, nullable=False),
        sa.Column("service", NAME, nullable=False),
        sa.Column("environment", NAME, nullable=False),
        sa.Column("revision", NAME, nullable=False),
        sa.Column("strategy", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("actor", NAME, nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("previous_revision", NAME, nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("started_at", sa.Double(), nullable=True),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("commit_message", sa.Text(), nullable=True),
        sa.Column("commit_time", sa.Double(), nullable=True),
        sa.Column("holder_pid", sa.Integer(), nullable=True),
        sa.Column("holder_start", sa.BigInteger(), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
    )
    op.create_index(
        "ix_deployments_service_environment_created_at",
        "deployments",
        ["service", "environment", "created_at"],
    )
    op.create_index("ix_deployments_state", "deployments", ["state"])

    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _deployment_id(),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        _deployment_fk("events"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index("ix_events_deployment_id_seq", "events", ["deployment_id", "seq"], unique=True)

    op.create_table(
        "batches",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _deployment_id(),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=True),
        sa.Column("instances", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=True),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("seconds", sa.Double(), nullable=True),
        _deployment_fk("batches"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batches")),
    )
    op.create_index("ix_batches_deployment_id_batch", "batches", ["deployment_id", "batch"])

    op.create_table(
        "instances",
        _deployment_id(),
        sa.Column("instance_id", NAME, nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("revision", NAME, nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.Double(), nullable=True),
        sa.Column("healthy_at", sa.Double(), nullable=True),
        sa.Column("traffic_at", sa.Double(), nullable=True),
        sa.Column("drain_started_at", sa.Double(), nullable=True),
        sa.Column("drain_finished_at", sa.Double(), nullable=True),
        sa.Column("stopped_at", sa.Double(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.Double(), nullable=False),
        _deployment_fk("instances"),
        sa.PrimaryKeyConstraint("deployment_id", "instance_id", name=op.f("pk_instances")),
    )

    op.create_table(
        "hook_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _deployment_id(),
        sa.Column("hook", NAME, nullable=False),
        sa.Column("instance_id", NAME, nullable=True),
        sa.Column("command", sa.Text(), nullable=True),
        sa.Column("started_at", sa.Double(), nullable=True),
        sa.Column("finished_at", sa.Double(), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("seconds", sa.Double(), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("output", sa.JSON(), nullable=False),
        _deployment_fk("hook_runs"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hook_runs")),
    )
    op.create_index("ix_hook_runs_deployment_id", "hook_runs", ["deployment_id"])

    op.create_table(
        "health_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _deployment_id(),
        sa.Column("instance_id", NAME, nullable=True),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("seconds", sa.Double(), nullable=True),
        _deployment_fk("health_results"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_health_results")),
    )
    op.create_index(
        "ix_health_results_deployment_id_instance_id",
        "health_results",
        ["deployment_id", "instance_id"],
    )

    op.create_table(
        "locks",
        sa.Column("service", NAME, nullable=False),
        sa.Column("environment", NAME, nullable=False),
        sa.Column("deployment_id", ID, nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("pid_start", sa.BigInteger(), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("acquired_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("service", "environment", name=op.f("pk_locks")),
    )


def downgrade() -> None:
    """Drop everything (the history is lost)."""
    for table in (
        "locks",
        "health_results",
        "hook_runs",
        "instances",
        "batches",
        "events",
        "deployments",
    ):
        op.drop_table(table)
