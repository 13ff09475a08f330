"""Steering a running progressive deployment from any process, through the history store.

`zerodown promote / pause / resume` (CLI, serve, API) call `send_command`; the process running
the canary polls `take_commands` between analyses. The store is the only thing every process
shares, so nothing else (signals, sockets) is needed for this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from zerodown.clock import Clock, SystemClock
from zerodown.errors import ConfigError, StoreError
from zerodown.store.base import HistoryStore
from zerodown.store.progressive_schema import DeploymentCommandRow


class Command(StrEnum):
    """What a user can ask of a running canary or blue/green deployment."""

    PROMOTE = "promote"  # go on to the next step now (ends a pause without a duration)
    PROMOTE_FULL = "promote_full"  # skip the remaining steps: 100 % now
    PAUSE = "pause"  # hold the current step (analysis keeps running) until resume
    RESUME = "resume"  # undo a pause


@dataclass(frozen=True)
class CommandRecord:
    """One command as the store keeps it."""

    id: int
    deployment_id: str
    command: Command
    actor: str
    created_at: float


class EngineBacked(Protocol):
    """A history store that exposes its SQLAlchemy engine (`SqlHistoryStore`)."""

    @property
    def engine(self) -> Engine: ...


class CommandInbox(Protocol):
    """Where a running deployment finds the commands sent to it."""

    async def take(self) -> list[CommandRecord]:
        """Commands not taken yet, oldest first; each is returned once."""
        ...


def _engine_of(store: HistoryStore) -> Engine:
    engine = store.sql_engine()
    if engine is None:
        raise StoreError(
            f"{type(store).__name__} cannot carry deployment commands: use the SQL history store"
        )
    return engine


def parse_command(text: str) -> Command:
    """A `Command` from its name; ConfigError naming the known ones."""
    try:
        return Command(text.replace("-", "_"))
    except ValueError:
        known = ", ".join(c.value for c in Command)
        raise ConfigError(f"unknown command {text!r}: use one of {known}") from None


async def send_command(
    store: HistoryStore,
    deployment_id: str,
    command: Command | str,
    actor: str,
    *,
    clock: Clock | None = None,
) -> CommandRecord:
    """Queue `command` for deployment `deployment_id` (which must exist); return it as stored."""
    wanted = command if isinstance(command, Command) else parse_command(command)
    engine = _engine_of(store)
    now = (clock or SystemClock()).time()

    def insert() -> CommandRecord:
        with engine.begin() as connection:
            result = connection.execute(
                sa.insert(DeploymentCommandRow).values(
                    deployment_id=deployment_id,
                    command=wanted.value,
                    actor=actor,
                    created_at=now,
                    taken_at=None,
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return CommandRecord(int(key[0]), deployment_id, wanted, actor, now)

    return await _run(f"queue {wanted.value!r} for deployment {deployment_id}", insert)


async def take_commands(
    store: HistoryStore, deployment_id: str, *, clock: Clock | None = None
) -> list[CommandRecord]:
    """Mark the deployment's untaken commands taken and return them, oldest first."""
    engine = _engine_of(store)
    now = (clock or SystemClock()).time()
    table: sa.Table = DeploymentCommandRow.__table__  # type: ignore[assignment]  # a Table

    def take() -> list[CommandRecord]:
        with engine.begin() as connection:
            rows = connection.execute(
                sa.select(table)
                .where(table.c.deployment_id == deployment_id, table.c.taken_at.is_(None))
                .order_by(table.c.id)
            ).all()
            if not rows:
                return []
            # Only rows still untaken: two readers at once never both act on one command.
            taken = connection.execute(
                sa.update(table)
                .where(table.c.id.in_([r.id for r in rows]), table.c.taken_at.is_(None))
                .values(taken_at=now)
                .returning(table.c.id)
            )
            ids = {row.id for row in taken}
        return [
            CommandRecord(r.id, r.deployment_id, Command(r.command), r.actor, r.created_at)
            for r in rows
            if r.id in ids
        ]

    return await _run(f"read the commands of deployment {deployment_id}", take)


class StoreCommandInbox:
    """The `CommandInbox` of one deployment on the SQL history store."""

    def __init__(
        self, store: HistoryStore, deployment_id: str, *, clock: Clock | None = None
    ) -> None:
        self.store = store
        self.deployment_id = deployment_id
        self.clock = clock

    async def take(self) -> list[CommandRecord]:
        """Commands sent to this deployment since the last call."""
        return await take_commands(self.store, self.deployment_id, clock=self.clock)


def inbox_for(store: HistoryStore, deployment_id: str) -> CommandInbox | None:
    """The deployment's inbox, or None when the store cannot carry commands (memory fakes)."""
    if store.sql_engine() is None:
        return None
    return StoreCommandInbox(store, deployment_id)


T = TypeVar("T")


async def _run(doing: str, operation: Callable[[], T]) -> T:
    try:
        return await asyncio.to_thread(operation)
    except SQLAlchemyError as exc:
        raise StoreError(f"the history database could not {doing}: {exc}") from exc
