"""The `deployment_commands` table: promote / pause / resume requests for a running deployment.

Any process (the CLI, `zerodown serve`, the API) writes a row; the process that runs the
deployment takes the untaken rows in order. See `zerodown.engine.commands`.
"""

from __future__ import annotations

from sqlalchemy import Double, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from zerodown.store.schema import ID, NAME, Base


class DeploymentCommandRow(Base):
    """One command for one deployment; `taken_at` is set once the deployment acted on it."""

    __tablename__ = "deployment_commands"
    __table_args__ = (
        Index("ix_deployment_commands_deployment_id_taken_at", "deployment_id", "taken_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    deployment_id: Mapped[str] = mapped_column(ID, ForeignKey("deployments.id", ondelete="CASCADE"))
    command: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(NAME)
    created_at: Mapped[float] = mapped_column(Double)
    taken_at: Mapped[float | None] = mapped_column(Double)
