"""Metrics and alarms: per-minute rollups of router metrics, and the alarm state history.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(length=64)
NAME = sa.String(length=200)


def upgrade() -> None:
    """Create `metric_minutes` and `alarm_history`."""
    op.create_table(
        "metric_minutes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("minute", sa.Double(), nullable=False),
        sa.Column("service", NAME, nullable=False),
        sa.Column("revision", NAME, nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("responses_2xx", sa.Integer(), nullable=False),
        sa.Column("responses_3xx", sa.Integer(), nullable=False),
        sa.Column("responses_4xx", sa.Integer(), nullable=False),
        sa.Column("responses_5xx", sa.Integer(), nullable=False),
        sa.Column("upstream_errors", sa.Integer(), nullable=False),
        sa.Column("latency_avg_ms", sa.Double(), nullable=True),
        sa.Column("latency_p50_ms", sa.Double(), nullable=True),
        sa.Column("latency_p95_ms", sa.Double(), nullable=True),
        sa.Column("latency_p99_ms", sa.Double(), nullable=True),
        sa.Column("latency_max_ms", sa.Double(), nullable=True),
        sa.Column("histogram", sa.JSON(), nullable=False),
        sa.Column("healthy_min", sa.Integer(), nullable=True),
        sa.Column("unhealthy_max", sa.Integer(), nullable=True),
        sa.Column("zero_healthy_seconds", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric_minutes")),
    )
    op.create_index(
        "ix_metric_minutes_minute_service_revision",
        "metric_minutes",
        ["minute", "service", "revision"],
        unique=True,
    )
    op.create_index("ix_metric_minutes_service_minute", "metric_minutes", ["service", "minute"])
    op.create_table(
        "alarm_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("environment", NAME, nullable=False),
        sa.Column("service", NAME, nullable=False),
        sa.Column("alarm", NAME, nullable=False),
        sa.Column("old_state", sa.String(length=32), nullable=False),
        sa.Column("new_state", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("deployment_id", ID, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarm_history")),
    )
    op.create_index("ix_alarm_history_environment_at", "alarm_history", ["environment", "at"])


def downgrade() -> None:
    """Drop both tables (the rollups and the alarm history are lost)."""
    op.drop_table("alarm_history")
    op.drop_table("metric_minutes")
