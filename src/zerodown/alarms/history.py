"""Alarm transitions in the history store (`alarm_history`), written and read off the loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from zerodown.alarms.evaluate import Transition
from zerodown.errors import StoreError
from zerodown.store.metrics_schema import AlarmHistoryRow


@dataclass(frozen=True)
class AlarmRecord:
    """One stored alarm transition."""

    at: float
    environment: str
    service: str
    alarm: str
    old_state: str
    new_state: str
    reason: str
    value: float | None
    threshold: float
    deployment_id: str | None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return dict(self.__dict__)


async def record_transition(
    engine: Engine,
    transition: Transition,
    *,
    environment: str,
    service: str,
    deployment_id: str | None,
) -> None:
    """Append one transition to `alarm_history`."""

    def write() -> None:
        with engine.begin() as connection:
            connection.execute(
                sa.insert(AlarmHistoryRow).values(
                    at=transition.at,
                    environment=environment,
                    service=service,
                    alarm=transition.alarm,
                    old_state=transition.old_state.value,
                    new_state=transition.new_state.value,
                    reason=transition.reason,
                    value=transition.value,
                    threshold=transition.threshold,
                    deployment_id=deployment_id,
                )
            )

    await _run(write, "record an alarm transition")


async def alarm_history(
    engine: Engine, *, environment: str | None = None, limit: int = 100
) -> list[AlarmRecord]:
    """The newest transitions first."""

    def read() -> list[AlarmRecord]:
        query = sa.select(AlarmHistoryRow).order_by(AlarmHistoryRow.at.desc()).limit(limit)
        if environment is not None:
            query = query.where(AlarmHistoryRow.environment == environment)
        with engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [
            AlarmRecord(
                at=row["at"],
                environment=row["environment"],
                service=row["service"],
                alarm=row["alarm"],
                old_state=row["old_state"],
                new_state=row["new_state"],
                reason=row["reason"],
                value=row["value"],
                threshold=row["threshold"],
                deployment_id=row["deployment_id"],
            )
            for row in rows
        ]

    records: list[AlarmRecord] = await _run(read, "read the alarm history")
    return records


async def _run(operation: Any, doing: str) -> Any:
    try:
        return await asyncio.to_thread(operation)
    except SQLAlchemyError as exc:
        raise StoreError(f"the history database could not {doing}: {exc}") from exc
