"""The deploy lock of a service+environment: who holds it, whether that holder still lives, and
the row-level steps that take and release it inside a store transaction.

A holder is named by pid *and* the kernel start time of that pid (field 22 of /proc/<pid>/stat),
so a pid the kernel reused for another process never keeps a lock alive. Liveness can only be
judged on the holder's own host: a lock held from another hostname is never taken over.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from zerodown.domain.records import LockHolder
from zerodown.errors import LockHeld
from zerodown.store.schema import LockRow

_PROC = Path("/proc")


@dataclass(frozen=True)
class StaleLockRelease:
    """A lock whose holder process was gone, released so a new deployment could take it."""

    service: str
    environment: str
    holder: LockHolder
    released_at: float
    reason: str  # e.g. "pid 1234 is not running"

    def describe(self) -> str:
        """One sentence for logs and events."""
        return (
            f"released the {self.service}/{self.environment} lock of deployment "
            f"{self.holder.deployment_id[:8]}: {self.reason}"
        )


def process_start_ticks(pid: int) -> int | None:
    """Kernel start time of `pid` in clock ticks since boot; None if no such (live) process."""
    try:
        raw = (_PROC / str(pid) / "stat").read_bytes().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    # The command name (field 2) sits in parentheses and may hold spaces or ')': count fields
    # from after the last ')' so index 0 is the state (field 3) and index 19 the start time.
    fields = raw[raw.rfind(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited; only its exit status is left to collect
        return None
    return int(fields[19])


def this_process_holder(deployment_id: str, *, now: float) -> LockHolder:
    """A `LockHolder` naming the calling process as the holder for `deployment_id`."""
    pid = os.getpid()
    ticks = process_start_ticks(pid)
    if ticks is None:  # pragma: no cover - /proc always lists the running process on Linux
        raise OSError(f"cannot read /proc/{pid}/stat for the current process")
    return LockHolder(
        deployment_id=deployment_id,
        pid=pid,
        pid_start=ticks,
        hostname=socket.gethostname(),
        acquired_at=now,
    )


def why_holder_is_gone(holder: LockHolder, *, hostname: str | None = None) -> str | None:
    """The reason the holder's process no longer runs, or None while it runs (or cannot be
    judged because it ran on another host)."""
    if holder.hostname != (hostname or socket.gethostname()):
        return None
    ticks = process_start_ticks(holder.pid)
    if ticks is None:
        return f"pid {holder.pid} is not running"
    if ticks != holder.pid_start:
        return f"pid {holder.pid} now belongs to another process (start time differs)"
    return None


def describe_ago(seconds: float) -> str:
    """A short human duration: '0.3 s', '12 s', '5 min', '3 h'."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def lock_held_message(service: str, environment: str, holder: LockHolder, *, now: float) -> str:
    """The sentence `LockHeld` carries: who holds the lock and what the user can do."""
    return (
        f"{service}/{environment} is being deployed by deployment {holder.deployment_id[:8]} "
        f"(pid {holder.pid} on {holder.hostname}, started "
        f"{describe_ago(now - holder.acquired_at)} ago): wait for it, or use --wait"
    )


def _holder_of(row: LockRow) -> LockHolder:
    return LockHolder(
        deployment_id=row.deployment_id,
        pid=row.pid,
        pid_start=row.pid_start,
        hostname=row.hostname,
        acquired_at=row.acquired_at,
    )


def read_lock(session: Session, service: str, environment: str) -> LockHolder | None:
    """The current holder of the lock (stale ones included), or None."""
    row = session.get(LockRow, (service, environment))
    return None if row is None else _holder_of(row)


def take_lock(
    session: Session, service: str, environment: str, holder: LockHolder, *, now: float
) -> StaleLockRelease | None:
    """Take the lock inside the caller's write transaction, or raise `LockHeld`.

    The caller makes the transaction exclusive (SQLite: BEGIN IMMEDIATE; PostgreSQL: the row is
    read FOR UPDATE, and a concurrent first insert fails on the primary key so the caller
    retries). Returns what was released when the previous holder's process was gone.
    """
    row = session.get(LockRow, (service, environment), with_for_update=True)
    if row is None:
        session.add(_row_of(service, environment, holder))
        session.flush()  # surface a concurrent insert (PostgreSQL) here, inside the caller's try
        return None
    released: StaleLockRelease | None = None
    if row.deployment_id != holder.deployment_id:
        current = _holder_of(row)
        reason = why_holder_is_gone(current)
        if reason is None:
            raise LockHeld(lock_held_message(service, environment, current, now=now))
        released = StaleLockRelease(service, environment, current, now, reason)
    # Same deployment (a resumed run in a new process) or a dead holder: the row becomes ours.
    row.deployment_id = holder.deployment_id
    row.pid = holder.pid
    row.pid_start = holder.pid_start
    row.hostname = holder.hostname
    row.acquired_at = holder.acquired_at
    return released


def drop_lock(session: Session, service: str, environment: str, deployment_id: str) -> bool:
    """Delete the lock if `deployment_id` holds it; True if it did."""
    row = session.get(LockRow, (service, environment), with_for_update=True)
    if row is None or row.deployment_id != deployment_id:
        return False
    session.delete(row)
    return True


def _row_of(service: str, environment: str, holder: LockHolder) -> LockRow:
    return LockRow(
        service=service,
        environment=environment,
        deployment_id=holder.deployment_id,
        pid=holder.pid,
        pid_start=holder.pid_start,
        hostname=holder.hostname,
        acquired_at=holder.acquired_at,
    )
