"""`SqlHistoryStore`: the history store on SQLAlchemy 2, SQLite by default, PostgreSQL by URL.

The API is async; each operation runs in a worker thread (`asyncio.to_thread`) on a sync engine,
one at a time per store, so a SQLite file is never written from two threads at once. SQLite runs
in WAL mode with a busy timeout so a CLI deploy and `zerodown serve` can share one file, and
every write transaction starts with BEGIN IMMEDIATE: it takes the write lock up front, which
makes read-then-write steps (the next event number, the deploy lock) atomic across processes.
Errors from SQLAlchemy, the drivers and Alembic become `StoreError` with a sentence a user can
act on; a password in a URL is never shown.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from zerodown.clock import Clock, SystemClock
from zerodown.domain.events import DeploymentEvent, DeploymentState
from zerodown.domain.records import DeploymentRecord, LockHolder
from zerodown.errors import LockHeld, StoreError
from zerodown.store.base import HistoryStore
from zerodown.store.database import (
    BUSY_TIMEOUT_MS,
    HEAD_REVISIONS,
    IMMEDIATE,
    MIGRATION_LOCK_KEY,
    alembic_config,
    current_revisions,
    database_url,
    mask_url,
    open_engine,
)
from zerodown.store.locking import (
    StaleLockRelease,
    describe_ago,
    drop_lock,
    lock_held_message,
    read_lock,
    take_lock,
)
from zerodown.store.schema import DeploymentRow, EventRow, apply_event

__all__ = ["SqlHistoryStore", "open_store"]

T = TypeVar("T")
log = logging.getLogger(__name__)

MIN_PREFIX = 4
_TERMINAL = [state.value for state in DeploymentState if state.terminal]


class SqlHistoryStore:
    """The `HistoryStore` on SQLAlchemy: SQLite (`sqlite:///path`) or PostgreSQL
    (`postgresql://...`, run through psycopg 3)."""

    def __init__(self, url: str, *, clock: Clock | None = None) -> None:
        self._url = database_url(url)
        self.url = self._url.render_as_string(hide_password=True)
        self._clock: Clock = clock or SystemClock()
        self._engine = open_engine(self._url)
        self._reads = sessionmaker(self._engine, expire_on_commit=False)
        self._writes = sessionmaker(
            self._engine.execution_options(**{IMMEDIATE: True}), expire_on_commit=False
        )
        self._serial = threading.Lock()
        self.last_stale_release: StaleLockRelease | None = None
        """The last lock taken over from a holder whose process was gone (None: never)."""

    def __repr__(self) -> str:
        return f"SqlHistoryStore({self.url!r})"

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for tests and tools that query the derived tables)."""
        return self._engine

    def sql_engine(self) -> Engine:
        """The engine, for the features with their own tables (see `HistoryStore.sql_engine`)."""
        return self._engine

    # -- schema ---------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Upgrade the schema to the newest migration; safe while other processes do the same."""
        with self._serial, self._engine.connect() as connection:
            with connection.begin():
                if current_revisions(connection) == HEAD_REVISIONS:
                    return  # the common case, without importing Alembic
            connection.execution_options(**{IMMEDIATE: True})
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                    )
                self._upgrade(connection)

    def _upgrade(self, connection: Connection) -> None:
        from alembic import command  # Alembic loads only when there is something to migrate
        from alembic.util import CommandError

        try:
            # Alembic joins the caller's transaction, so the upgrade commits (or not) as one.
            command.upgrade(alembic_config(connection), "heads")
        except CommandError as exc:
            hint = ""
            if "Can't locate revision" in str(exc):
                hint = " (a newer zerodown wrote this database: upgrade zerodown)"
            raise StoreError(
                f"cannot migrate the history database at {self.url}: {self.reason(exc)}{hint}"
            ) from exc

    # -- deployments ----------------------------------------------------------------------------

    async def create_deployment(self, record: DeploymentRecord) -> None:
        """Insert a new deployment."""

        def insert() -> None:
            with self._writes.begin() as session:
                if session.get(DeploymentRow, record.id) is not None:
                    raise StoreError(f"deployment {record.id} is already in the history")
                session.add(DeploymentRow.of_record(record))

        await self._run(f"save deployment {record.id}", insert)

    async def update_deployment(
        self,
        deployment_id: str,
        *,
        state: DeploymentState | None = None,
        reason: str | None = None,
        started_at: float | None = None,
        finished_at: float | None = None,
        previous_revision: str | None = None,
    ) -> DeploymentRecord:
        """Change the given fields (None leaves a field as it is); return the stored record."""

        def update() -> DeploymentRecord:
            with self._writes.begin() as session:
                row = session.get(DeploymentRow, deployment_id)
                if row is None:
                    raise StoreError(f"there is no deployment {deployment_id} in the history")
                if state is not None:
                    row.state = state.value
                if reason is not None:
                    row.reason = reason
                if started_at is not None:
                    row.started_at = started_at
                if finished_at is not None:
                    row.finished_at = finished_at
                if previous_revision is not None:
                    row.previous_revision = previous_revision
                return row.to_record()

        return await self._run(f"update deployment {deployment_id}", update)

    async def get_deployment(self, deployment_id: str) -> DeploymentRecord:
        """The deployment with this id or unique id prefix (at least 4 characters)."""
        return await self._run(f"read deployment {deployment_id}", lambda: self._get(deployment_id))

    def _get(self, wanted: str) -> DeploymentRecord:
        with self._reads() as session:
            row = session.get(DeploymentRow, wanted)
            if row is not None:
                return row.to_record()
            if len(wanted) < MIN_PREFIX:
                raise StoreError(
                    f"there is no deployment {wanted!r}: give its full id, or at least "
                    f"{MIN_PREFIX} of its first characters"
                )
            query = (
                sa.select(DeploymentRow)
                .where(DeploymentRow.id.startswith(wanted, autoescape=True))
                .order_by(DeploymentRow.created_at.desc())
                .limit(6)
            )
            rows = list(session.scalars(query))
        if not rows:
            raise StoreError(f"there is no deployment whose id starts with {wanted!r}")
        if len(rows) > 1:
            shown = ", ".join(row.id[:12] for row in rows[:5])
            more = "" if len(rows) <= 5 else ", ..."
            raise StoreError(
                f"{wanted!r} matches more than one deployment ({shown}{more}): "
                "give more characters of the id"
            )
        return rows[0].to_record()

    async def list_deployments(
        self, *, service: str | None = None, environment: str | None = None, limit: int = 50
    ) -> list[DeploymentRecord]:
        """Deployments, newest first, optionally of one service and/or environment."""
        query = sa.select(DeploymentRow)
        if service is not None:
            query = query.where(DeploymentRow.service == service)
        if environment is not None:
            query = query.where(DeploymentRow.environment == environment)
        query = query.order_by(DeploymentRow.created_at.desc(), DeploymentRow.id.desc())
        return await self._run("list deployments", lambda: self._records(query.limit(limit)))

    async def last_successful(self, service: str, environment: str) -> DeploymentRecord | None:
        """The newest succeeded deployment (deploy or rollback) of the service+environment."""
        query = (
            sa.select(DeploymentRow)
            .where(
                DeploymentRow.service == service,
                DeploymentRow.environment == environment,
                DeploymentRow.state == DeploymentState.SUCCEEDED.value,
            )
            .order_by(DeploymentRow.created_at.desc(), DeploymentRow.id.desc())
            .limit(1)
        )
        found = await self._run("find the last successful deployment", lambda: self._records(query))
        return found[0] if found else None

    async def unfinished(self) -> list[DeploymentRecord]:
        """Deployments not in a terminal state, oldest first."""
        query = (
            sa.select(DeploymentRow)
            .where(DeploymentRow.state.not_in(_TERMINAL))
            .order_by(DeploymentRow.created_at, DeploymentRow.id)
        )
        return await self._run("list unfinished deployments", lambda: self._records(query))

    def _records(self, query: sa.Select[DeploymentRow]) -> list[DeploymentRecord]:
        with self._reads() as session:
            return [row.to_record() for row in session.scalars(query)]

    # -- events ---------------------------------------------------------------------------------

    async def record_event(self, event: DeploymentEvent) -> None:
        """Append an event with the next sequence number; update the derived tables with it."""

        def append() -> None:
            with self._writes.begin() as session:
                if session.get(DeploymentRow, event.deployment_id) is None:
                    raise StoreError(
                        f"cannot record {event.kind.value!r} for deployment "
                        f"{event.deployment_id}: it is not in the history (create it first)"
                    )
                last = session.scalar(
                    sa.select(sa.func.max(EventRow.seq)).where(
                        EventRow.deployment_id == event.deployment_id
                    )
                )
                seq = (last or 0) + 1
                session.add(
                    EventRow(
                        deployment_id=event.deployment_id,
                        seq=seq,
                        at=event.at,
                        kind=event.kind.value,
                        message=event.message,
                        data=event.data,
                    )
                )
                apply_event(session, event, seq)

        await self._run(f"record an event of deployment {event.deployment_id}", append)

    async def events(
        self, deployment_id: str, *, after: int = 0
    ) -> list[tuple[int, DeploymentEvent]]:
        """Events of a deployment with sequence numbers above `after`, in order."""
        query = (
            sa.select(EventRow)
            .where(EventRow.deployment_id == deployment_id, EventRow.seq > after)
            .order_by(EventRow.seq)
        )

        def read() -> list[tuple[int, DeploymentEvent]]:
            with self._reads() as session:
                return [(row.seq, row.to_event()) for row in session.scalars(query)]

        return await self._run(f"read the events of deployment {deployment_id}", read)

    # -- the deploy lock ------------------------------------------------------------------------

    async def acquire_lock(self, service: str, environment: str, holder: LockHolder) -> None:
        """Take the lock or raise `LockHeld`; a holder whose process is gone is replaced (see
        `last_stale_release`)."""
        released = await self._run(
            f"take the {service}/{environment} deploy lock",
            lambda: self._take_lock(service, environment, holder),
        )
        if released is not None:
            self.last_stale_release = released
            log.warning("%s", released.describe())

    def _take_lock(
        self, service: str, environment: str, holder: LockHolder
    ) -> StaleLockRelease | None:
        attempts = 3
        for attempt in range(attempts):
            try:
                with self._writes.begin() as session:
                    return take_lock(session, service, environment, holder, now=self._clock.time())
            except IntegrityError:
                # PostgreSQL: another process inserted the first lock row between our read and
                # our insert. Read again; the row is there now and FOR UPDATE waits on it.
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def wait_for_lock(
        self,
        service: str,
        environment: str,
        holder: LockHolder,
        *,
        timeout: float,
        poll: float = 0.2,
    ) -> None:
        """Take the lock, polling every `poll` s while another deployment holds it; raise
        `LockHeld` if it is still held after `timeout` s."""
        deadline = self._clock.monotonic() + timeout
        while True:
            try:
                await self.acquire_lock(service, environment, holder)
                return
            except LockHeld:
                remaining = deadline - self._clock.monotonic()
                if remaining <= 0:
                    break
            await self._clock.sleep(min(poll, remaining))
        current = await self.lock_holder(service, environment)
        who = (
            lock_held_message(service, environment, current, now=self._clock.time()).split(":")[0]
            if current is not None
            else f"{service}/{environment} was locked"
        )
        raise LockHeld(f"{who}; gave up after waiting {describe_ago(timeout)}")

    async def release_lock(self, service: str, environment: str, deployment_id: str) -> None:
        """Release the lock if `deployment_id` holds it; otherwise do nothing."""

        def release() -> None:
            with self._writes.begin() as session:
                drop_lock(session, service, environment, deployment_id)

        await self._run(f"release the {service}/{environment} deploy lock", release)

    async def lock_holder(self, service: str, environment: str) -> LockHolder | None:
        """Who holds the lock now (stale holders included)."""

        def read() -> LockHolder | None:
            with self._reads() as session:
                return read_lock(session, service, environment)

        return await self._run(f"read the {service}/{environment} deploy lock", read)

    async def close(self) -> None:
        """Release the engine's connections."""
        await asyncio.to_thread(self._engine.dispose)

    # -- plumbing -------------------------------------------------------------------------------

    async def _run(self, doing: str, operation: Callable[[], T]) -> T:
        return await asyncio.to_thread(self._call, doing, operation)

    def _call(self, doing: str, operation: Callable[[], T]) -> T:
        with self._serial:
            try:
                return operation()
            except SQLAlchemyError as exc:
                raise StoreError(
                    f"the history database at {self.url} could not {doing}: {self.reason(exc)}"
                ) from exc

    def reason(self, exc: BaseException) -> str:
        """One line from a driver or SQLAlchemy error, without passwords."""
        original = getattr(exc, "orig", None)
        text = str(original if original is not None else exc)
        text = "; ".join(line.strip() for line in text.splitlines() if line.strip())
        text = text.split("(Background on this error", 1)[0].strip()
        if self._url.password:
            text = text.replace(str(self._url.password), "***")
        if "database is locked" in text:
            text += f" (another process kept it locked longer than {BUSY_TIMEOUT_MS // 1000} s)"
        return mask_url(text)[:500]


def open_store(url: str, *, clock: Clock | None = None) -> SqlHistoryStore:
    """Open the history at `url` (creating a SQLite file's folder) and migrate it to the newest
    schema; raise `StoreError` with the reason if that cannot be done."""
    store = SqlHistoryStore(url, clock=clock)
    try:
        store.migrate()
    except (SQLAlchemyError, OSError) as exc:
        store.engine.dispose()
        raise StoreError(
            f"cannot open the history database at {store.url}: {store.reason(exc)}"
        ) from exc
    except StoreError:
        store.engine.dispose()
        raise
    return store


if TYPE_CHECKING:

    def _conforms(store: SqlHistoryStore) -> HistoryStore:
        return store  # mypy proves SqlHistoryStore implements the HistoryStore Protocol
