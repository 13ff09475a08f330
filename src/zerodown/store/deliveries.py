"""`SqlDeliveryLog`: the notifier's delivery log in the history database.

It writes on its own connections of the store's engine, in a worker thread: a delivery that is
logged while a deployment writes its events waits at most for SQLite's busy timeout, and a failed
write is the dispatcher's to log, never the deployment's to see.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from zerodown.errors import StoreError
from zerodown.notifiers.base import DeliveryAttempt
from zerodown.store.notifications_schema import NotificationDeliveryRow

T = TypeVar("T")


@dataclass(frozen=True)
class DeliveryRecord:
    """A delivery attempt as read back from the log."""

    notification_id: str
    deployment_id: str | None
    kind: str
    severity: str
    environment: str | None
    service: str | None
    channel: str
    attempt: int
    ok: bool
    status_code: int | None
    error: str | None
    seconds: float
    at: float


class SqlDeliveryLog:
    """Delivery attempts as rows of `notification_deliveries` (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._serial = threading.Lock()  # one write at a time from this process

    async def record(self, attempt: DeliveryAttempt) -> None:
        """Append one attempt; StoreError if the database refuses."""
        note = attempt.notification
        row = {
            "notification_id": note.id,
            "deployment_id": note.deployment_id,
            "kind": note.kind,
            "severity": note.severity.value,
            "environment": note.environment,
            "service": note.service,
            "channel": attempt.channel,
            "attempt": attempt.attempt,
            "ok": attempt.ok,
            "status_code": attempt.status_code,
            "error": attempt.error,
            "seconds": attempt.seconds,
            "at": attempt.at,
        }

        def insert() -> None:
            with self._serial, self.engine.begin() as connection:
                connection.execute(sa.insert(NotificationDeliveryRow).values(**row))

        await self._run("record a notification delivery", insert)

    async def list(
        self, *, deployment_id: str | None = None, limit: int = 100
    ) -> list[DeliveryRecord]:
        """Attempts, oldest first (of one deployment, or the newest `limit` of all)."""

        def read() -> list[DeliveryRecord]:
            table = NotificationDeliveryRow
            query = sa.select(table).order_by(table.id.desc()).limit(limit)
            if deployment_id is not None:
                query = query.where(table.deployment_id == deployment_id)
            with self.engine.connect() as connection:
                rows = connection.execute(query).mappings().all()
            return [
                DeliveryRecord(**{k: v for k, v in row.items() if k != "id"})
                for row in reversed(rows)
            ]

        return await self._run("read the notification delivery log", read)

    async def _run(self, doing: str, operation: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(operation)
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
            raise StoreError(f"the history database could not {doing}: {reason}") from exc
