"""Commands that steer a running progressive deployment (promote, pause, resume).

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create `deployment_commands`."""
    op.create_table(
        "deployment_commands",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("deployment_id", sa.String(length=64), nullable=False),
        sa.Column("command", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("taken_at", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_deployment_commands_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_commands")),
    )
    op.create_index(
        "ix_deployment_commands_deployment_id_taken_at",
        "deployment_commands",
        ["deployment_id", "taken_at"],
    )


def downgrade() -> None:
    """Drop `deployment_commands` (pending commands are lost)."""
    op.drop_index("ix_deployment_commands_deployment_id_taken_at", table_name="deployment_commands")
    op.drop_table("deployment_commands")
