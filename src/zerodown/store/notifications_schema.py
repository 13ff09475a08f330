"""The notifier's table: one row per delivery attempt of a notification to a channel.

No foreign key to `deployments`: pipeline and test notifications have no deployment, and the log
of what people were told must outlive a pruned deployment.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Double, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from zerodown.store.schema import ID, NAME, Base


class NotificationDeliveryRow(Base):
    """One attempt to deliver one notification to one channel, and how it went."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        Index("ix_notification_deliveries_deployment_id", "deployment_id"),
        Index("ix_notification_deliveries_at", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    notification_id: Mapped[str] = mapped_column(ID)
    deployment_id: Mapped[str | None] = mapped_column(ID)
    kind: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    environment: Mapped[str | None] = mapped_column(NAME)
    service: Mapped[str | None] = mapped_column(NAME)
    channel: Mapped[str] = mapped_column(NAME)
    attempt: Mapped[int] = mapped_column(Integer)
    ok: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    seconds: Mapped[float] = mapped_column(Double)
    at: Mapped[float] = mapped_column(Double)
