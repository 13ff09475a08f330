"""The metrics feature's tables: per-minute rollups of router metrics, and alarm transitions.

`metric_minutes` holds one row per (minute, service, revision); the row with revision "" is the
whole service (every revision) and carries the health numbers, `zero_healthy_seconds` being the
downtime KPI. `alarm_history` keeps every alarm state change with the numbers behind it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Double, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from zerodown.store.schema import ID, NAME, Base


class MetricMinuteRow(Base):
    """One minute of one service (revision "") or one of its revisions."""

    __tablename__ = "metric_minutes"
    __table_args__ = (
        Index(
            "ix_metric_minutes_minute_service_revision",
            "minute",
            "service",
            "revision",
            unique=True,
        ),
        Index("ix_metric_minutes_service_minute", "service", "minute"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    minute: Mapped[float] = mapped_column(Double)  # unix start of the minute
    service: Mapped[str] = mapped_column(NAME)  # the route name, e.g. api.prod
    revision: Mapped[str] = mapped_column(NAME)  # "" for the whole service
    requests: Mapped[int] = mapped_column(Integer)
    responses_2xx: Mapped[int] = mapped_column(Integer)
    responses_3xx: Mapped[int] = mapped_column(Integer)
    responses_4xx: Mapped[int] = mapped_column(Integer)
    responses_5xx: Mapped[int] = mapped_column(Integer)
    upstream_errors: Mapped[int] = mapped_column(Integer)
    latency_avg_ms: Mapped[float | None] = mapped_column(Double)
    latency_p50_ms: Mapped[float | None] = mapped_column(Double)
    latency_p95_ms: Mapped[float | None] = mapped_column(Double)
    latency_p99_ms: Mapped[float | None] = mapped_column(Double)
    latency_max_ms: Mapped[float | None] = mapped_column(Double)
    histogram: Mapped[dict[str, Any]] = mapped_column(JSON)  # bucket index -> count
    healthy_min: Mapped[int | None] = mapped_column(Integer)
    unhealthy_max: Mapped[int | None] = mapped_column(Integer)
    zero_healthy_seconds: Mapped[float | None] = mapped_column(Double)


class AlarmHistoryRow(Base):
    """One alarm state change, with the value and threshold that caused it."""

    __tablename__ = "alarm_history"
    __table_args__ = (Index("ix_alarm_history_environment_at", "environment", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Double)
    environment: Mapped[str] = mapped_column(NAME)
    service: Mapped[str] = mapped_column(NAME)
    alarm: Mapped[str] = mapped_column(NAME)
    old_state: Mapped[str] = mapped_column(String(32))
    new_state: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    value: Mapped[float | None] = mapped_column(Double)
    threshold: Mapped[float] = mapped_column(Double)
    deployment_id: Mapped[str | None] = mapped_column(ID)
