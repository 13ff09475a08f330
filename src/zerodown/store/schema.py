"""The history store's tables (SQLAlchemy 2 declarative), built exactly so by the migrations, and
how the derived tables follow each new event.

Timestamps are unix seconds as double-precision floats: exact to well under a microsecond, the
same on SQLite and PostgreSQL, and what the store's API speaks. `deployments` and `events` are the
record; `batches`, `instances`, `hook_runs` and `health_results` are derived from the events so
the dashboard and the CLI can query them without replaying a timeline.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from zerodown.domain.events import DeploymentEvent, DeploymentState, EventKind
from zerodown.domain.records import DeploymentRecord

# Named constraints keep migrations deterministic across SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID = String(64)  # deployment ids (uuid hex today; room for longer schemes)
NAME = String(200)  # service, environment, revision, actor, hook and instance names


class Base(DeclarativeBase):
    """Declarative base of the history store's tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def dump_json(value: Any) -> str:
    """JSON for the JSON columns; values JSON cannot express (paths, enums) are stored as text."""
    return json.dumps(value, default=str, ensure_ascii=False)


def _deployment_fk() -> Any:
    return ForeignKey("deployments.id", ondelete="CASCADE")


class DeploymentRow(Base):
    """One deployment: every field of `DeploymentRecord`."""

    __tablename__ = "deployments"
    __table_args__ = (
        Index(
            "ix_deployments_service_environment_created_at",
            "service",
            "environment",
            "created_at",
        ),
        Index("ix_deployments_state", "state"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    service: Mapped[str] = mapped_column(NAME)
    environment: Mapped[str] = mapped_column(NAME)
    revision: Mapped[str] = mapped_column(NAME)
    strategy: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(NAME)
    created_at: Mapped[float] = mapped_column(Double)
    kind: Mapped[str] = mapped_column(String(32))
    previous_revision: Mapped[str | None] = mapped_column(NAME)
    reason: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[float | None] = mapped_column(Double)
    finished_at: Mapped[float | None] = mapped_column(Double)
    commit_message: Mapped[str | None] = mapped_column(Text)
    commit_time: Mapped[float | None] = mapped_column(Double)
    holder_pid: Mapped[int | None] = mapped_column(Integer)
    holder_start: Mapped[int | None] = mapped_column(BigInteger)
    labels: Mapped[dict[str, str]] = mapped_column(JSON)

    @classmethod
    def of_record(cls, record: DeploymentRecord) -> DeploymentRow:
        """The row that stores `record`."""
        return cls(
            id=record.id,
            service=record.service,
            environment=record.environment,
            revision=record.revision,
            strategy=record.strategy,
            state=DeploymentState(record.state).value,
            actor=record.actor,
            created_at=record.created_at,
            kind=record.kind,
            previous_revision=record.previous_revision,
            reason=record.reason,
            started_at=record.started_at,
            finished_at=record.finished_at,
            commit_message=record.commit_message,
            commit_time=record.commit_time,
            holder_pid=record.holder_pid,
            holder_start=record.holder_start,
            labels=dict(record.labels),
        )

    def to_record(self) -> DeploymentRecord:
        """The `DeploymentRecord` this row stores."""
        return DeploymentRecord(
            id=self.id,
            service=self.service,
            environment=self.environment,
            revision=self.revision,
            strategy=self.strategy,
            state=DeploymentState(self.state),
            actor=self.actor,
            created_at=self.created_at,
            kind=self.kind,
            previous_revision=self.previous_revision,
            reason=self.reason,
            started_at=self.started_at,
            finished_at=self.finished_at,
            commit_message=self.commit_message,
            commit_time=self.commit_time,
            holder_pid=self.holder_pid,
            holder_start=self.holder_start,
            labels=dict(self.labels or {}),
        )


class EventRow(Base):
    """One event of a deployment, numbered 1, 2, 3... per deployment by `seq`."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_deployment_id_seq", "deployment_id", "seq", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    deployment_id: Mapped[str] = mapped_column(ID, _deployment_fk())
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[float] = mapped_column(Double)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)

    def to_event(self) -> DeploymentEvent:
        """The `DeploymentEvent` this row stores."""
        return DeploymentEvent(
            deployment_id=self.deployment_id,
            kind=EventKind(self.kind),
            message=self.message,
            data=dict(self.data or {}),
            at=self.at,
        )


class BatchRow(Base):
    """One batch of a rollout (a rollback's batches get rows of their own)."""

    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_deployment_id_batch", "deployment_id", "batch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    deployment_id: Mapped[str] = mapped_column(ID, _deployment_fk())
    batch: Mapped[int] = mapped_column(Integer)
    total: Mapped[int | None] = mapped_column(Integer)  # "batch 2 of <total>"
    instances: Mapped[list[str]] = mapped_column(JSON)
    started_at: Mapped[float | None] = mapped_column(Double)
    finished_at: Mapped[float | None] = mapped_column(Double)
    ok: Mapped[bool | None] = mapped_column(Boolean)
    seconds: Mapped[float | None] = mapped_column(Double)


class InstanceRow(Base):
    """One instance as a deployment saw it: its timeline and the last thing that happened to it."""

    __tablename__ = "instances"

    deployment_id: Mapped[str] = mapped_column(ID, _deployment_fk(), primary_key=True)
    instance_id: Mapped[str] = mapped_column(NAME, primary_key=True)
    state: Mapped[str] = mapped_column(String(32))
    revision: Mapped[str | None] = mapped_column(NAME)
    port: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[float | None] = mapped_column(Double)
    healthy_at: Mapped[float | None] = mapped_column(Double)
    traffic_at: Mapped[float | None] = mapped_column(Double)
    drain_started_at: Mapped[float | None] = mapped_column(Double)
    drain_finished_at: Mapped[float | None] = mapped_column(Double)
    stopped_at: Mapped[float | None] = mapped_column(Double)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[float] = mapped_column(Double)


class HookRunRow(Base):
    """One run of a lifecycle hook, with the output lines it printed."""

    __tablename__ = "hook_runs"
    __table_args__ = (Index("ix_hook_runs_deployment_id", "deployment_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    deployment_id: Mapped[str] = mapped_column(ID, _deployment_fk())
    hook: Mapped[str] = mapped_column(NAME)
    instance_id: Mapped[str | None] = mapped_column(NAME)
    command: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[float | None] = mapped_column(Double)
    finished_at: Mapped[float] = mapped_column(Double)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    seconds: Mapped[float | None] = mapped_column(Double)
    ok: Mapped[bool | None] = mapped_column(Boolean)
    output: Mapped[list[str]] = mapped_column(JSON)


class HealthResultRow(Base):
    """One health probe of an instance during a deployment."""

    __tablename__ = "health_results"
    __table_args__ = (
        Index("ix_health_results_deployment_id_instance_id", "deployment_id", "instance_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    deployment_id: Mapped[str] = mapped_column(ID, _deployment_fk())
    instance_id: Mapped[str | None] = mapped_column(NAME)
    at: Mapped[float] = mapped_column(Double)
    ok: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[str | None] = mapped_column(Text)
    seconds: Mapped[float | None] = mapped_column(Double)


class LockRow(Base):
    """The deploy lock of one service+environment and who holds it."""

    __tablename__ = "locks"

    service: Mapped[str] = mapped_column(NAME, primary_key=True)
    environment: Mapped[str] = mapped_column(NAME, primary_key=True)
    # No foreign key: the engine takes the lock before it creates the deployment's record.
    deployment_id: Mapped[str] = mapped_column(ID)
    pid: Mapped[int] = mapped_column(Integer)
    pid_start: Mapped[int] = mapped_column(BigInteger)
    hostname: Mapped[str] = mapped_column(String(255))
    acquired_at: Mapped[float] = mapped_column(Double)


# -- tables derived from events -------------------------------------------------------------------

_INSTANCE_STATES = {
    EventKind.INSTANCE_STARTING: "starting",
    EventKind.INSTANCE_HEALTHY: "healthy",
    EventKind.INSTANCE_FAILED: "failed",
    EventKind.TRAFFIC_ADDED: "in_service",
    EventKind.DRAIN_STARTED: "draining",
    EventKind.DRAIN_FINISHED: "drained",
    EventKind.INSTANCE_STOPPED: "stopped",
}


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def apply_event(session: Session, event: DeploymentEvent, seq: int) -> None:
    """Update batches, instances, hook_runs or health_results for one new event."""
    data = event.data
    if event.kind is EventKind.BATCH_STARTED:
        session.add(
            BatchRow(
                deployment_id=event.deployment_id,
                batch=_int(data.get("batch")) or 0,
                total=_int(data.get("of")),
                instances=[str(i) for i in data.get("instances") or []],
                started_at=event.at,
            )
        )
    elif event.kind is EventKind.BATCH_FINISHED:
        _finish_batch(session, event)
    elif event.kind in _INSTANCE_STATES:
        _track_instance(session, event)
    elif event.kind is EventKind.HEALTH_PROBE:
        session.add(
            HealthResultRow(
                deployment_id=event.deployment_id,
                instance_id=_text(data.get("instance")),
                at=event.at,
                ok=bool(data.get("ok")),
                detail=_text(data.get("detail")),
                seconds=_float(data.get("seconds")),
            )
        )
    elif event.kind is EventKind.HOOK_FINISHED:
        _finish_hook(session, event, seq)


def _finish_batch(session: Session, event: DeploymentEvent) -> None:
    number = _int(event.data.get("batch")) or 0
    # The newest open batch with this number: a rollback numbers its batches from 1 again.
    row = session.scalars(
        sa.select(BatchRow)
        .where(BatchRow.deployment_id == event.deployment_id, BatchRow.batch == number)
        .order_by(BatchRow.finished_at.is_(None).desc(), BatchRow.id.desc())
        .limit(1)
    ).first()
    if row is None:
        row = BatchRow(deployment_id=event.deployment_id, batch=number, instances=[])
        session.add(row)
    row.finished_at = event.at
    row.ok = bool(event.data["ok"]) if "ok" in event.data else None
    row.seconds = _float(event.data.get("seconds"))


def _track_instance(session: Session, event: DeploymentEvent) -> None:
    instance_id = _text(event.data.get("instance"))
    if instance_id is None:
        return
    state = _INSTANCE_STATES[event.kind]
    row = session.get(InstanceRow, (event.deployment_id, instance_id))
    if row is None:  # e.g. draining an instance an earlier deployment started
        row = InstanceRow(deployment_id=event.deployment_id, instance_id=instance_id)
        session.add(row)
    row.state = state
    row.updated_at = event.at
    data, at = event.data, event.at
    match event.kind:
        case EventKind.INSTANCE_STARTING:
            row.revision = _text(data.get("revision")) or row.revision
            row.port = _int(data.get("port")) or row.port
            row.started_at = at
        case EventKind.INSTANCE_HEALTHY:
            row.healthy_at = at
        case EventKind.INSTANCE_FAILED:
            row.reason = _text(data.get("reason"))
        case EventKind.TRAFFIC_ADDED:
            row.traffic_at = at
        case EventKind.DRAIN_STARTED:
            row.drain_started_at = at
        case EventKind.DRAIN_FINISHED:
            row.drain_finished_at = at
        case EventKind.INSTANCE_STOPPED:
            row.stopped_at = at
            row.exit_code = _int(data.get("exit_code"))


def _finish_hook(session: Session, event: DeploymentEvent, seq: int) -> None:
    hook, instance = _text(event.data.get("hook")), _text(event.data.get("instance"))

    def same_run(row: EventRow) -> bool:
        return _text(row.data.get("hook")) == hook and _text(row.data.get("instance")) == instance

    hook_events = session.scalars(
        sa.select(EventRow)
        .where(
            EventRow.deployment_id == event.deployment_id,
            EventRow.seq < seq,
            EventRow.kind.in_([EventKind.HOOK_STARTED.value, EventKind.HOOK_OUTPUT.value]),
        )
        .order_by(EventRow.seq)
    ).all()
    starts = [r for r in hook_events if r.kind == EventKind.HOOK_STARTED.value and same_run(r)]
    start = starts[-1] if starts else None
    first_seq = start.seq if start is not None else 0
    output = [
        str(r.data.get("line", ""))
        for r in hook_events
        if r.kind == EventKind.HOOK_OUTPUT.value and r.seq > first_seq and same_run(r)
    ]
    exit_code = _int(event.data.get("exit_code"))
    session.add(
        HookRunRow(
            deployment_id=event.deployment_id,
            hook=hook or "",
            instance_id=instance,
            command=_text(start.data.get("command")) if start is not None else None,
            started_at=start.at if start is not None else None,
            finished_at=event.at,
            exit_code=exit_code,
            seconds=_float(event.data.get("seconds")),
            ok=bool(event.data["ok"]) if "ok" in event.data else exit_code == 0,
            output=output,
        )
    )


import zerodown.store.api_schema  # noqa: E402  (registers its tables on Base)
import zerodown.store.metrics_schema  # noqa: E402  (registers its tables on Base)
import zerodown.store.notifications_schema  # noqa: E402  (registers its tables on Base)
import zerodown.store.pipeline_schema  # noqa: E402  (registers its tables on Base)
import zerodown.store.progressive_schema  # noqa: E402, F401  (registers its tables on Base)
