"""The SQL history store on a SQLite file: round trips, derived tables, the deploy lock.

The `check_*` scenarios take any store and are run again against a real PostgreSQL server by
tests/integration/test_store_postgres.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from zerodown.clock import FakeClock
from zerodown.domain.events import DeploymentEvent, DeploymentState, EventKind
from zerodown.domain.records import DeploymentRecord, LockHolder
from zerodown.errors import LockHeld, StoreError
from zerodown.store.database import HEAD_REVISIONS, MIGRATIONS, alembic_config
from zerodown.store.locking import process_start_ticks, this_process_holder
from zerodown.store.schema import (
    Base,
    BatchRow,
    HealthResultRow,
    HookRunRow,
    InstanceRow,
)
from zerodown.store.sql import SqlHistoryStore, open_store

T0 = 1_700_000_000.123456  # sub-millisecond digits: timestamps must come back exactly

# A contender in the lock race: opens the store, says "ready", waits for "go", tries the lock,
# prints "won" or "held", then keeps its pid alive (holding the lock) until stdin closes.
CONTENDER = """
import asyncio, sys, time
from zerodown.errors import LockHeld
from zerodown.store.locking import this_process_holder
from zerodown.store.sql import open_store

async def main(url, deployment_id):
    store = open_store(url)
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        await store.acquire_lock("api", "prod", this_process_holder(deployment_id, now=time.time()))
        print("won", flush=True)
    except LockHeld as exc:
        print("held", exc, flush=True)
    sys.stdin.read()
    await store.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def record(
    deployment_id: str,
    *,
    service: str = "api",
    environment: str = "prod",
    created_at: float = T0,
    state: DeploymentState = DeploymentState.PENDING,
    **changes: Any,
) -> DeploymentRecord:
    values: dict[str, Any] = {
        "id": deployment_id,
        "service": service,
        "environment": environment,
        "revision": "a" * 40,
        "strategy": "rolling",
        "state": state,
        "actor": "alice",
        "created_at": created_at,
    }
    values.update(changes)
    return DeploymentRecord(**values)


def holder(deployment_id: str, **changes: Any) -> LockHolder:
    return LockHolder(**{**this_process_holder(deployment_id, now=time.time()).__dict__, **changes})


def rows(store: SqlHistoryStore, model: type[Base], deployment_id: str) -> list[Any]:
    """Rows of a derived table for one deployment, in insertion order."""
    table = model.__table__
    with store.engine.connect() as connection:
        query = sa.select(table).where(table.c.deployment_id == deployment_id)
        return list(connection.execute(query.order_by(*table.primary_key.columns)))


# -- scenarios, shared with the PostgreSQL integration test --------------------------------------


async def check_round_trip(store: SqlHistoryStore) -> None:
    """Create, update, get (by prefix), list, last_successful and unfinished return what went in."""
    full = record(
        "3f2a91c0aaaa",
        kind="rollback",
        previous_revision="b" * 40,
        commit_message="fix: 한국어 message",
        commit_time=T0 - 3600.000123,
        holder_pid=1234,
        holder_start=2**40,
        labels={"team": "tpt", "ticket": "OPS-1"},
    )
    await store.create_deployment(full)
    assert await store.get_deployment("3f2a91c0aaaa") == full
    assert await store.get_deployment("3f2a") == full

    updated = await store.update_deployment(
        "3f2a91c0aaaa",
        state=DeploymentState.IN_PROGRESS,
        started_at=T0 + 1.0015,
        reason="because",
    )
    assert updated.state is DeploymentState.IN_PROGRESS
    assert updated.started_at == T0 + 1.0015
    assert updated.reason == "because"
    assert updated.previous_revision == "b" * 40  # untouched fields stay
    finished = await store.update_deployment(
        "3f2a91c0aaaa", state=DeploymentState.SUCCEEDED, finished_at=T0 + 61.0015
    )
    assert await store.get_deployment("3f2a91c0") == finished
    assert finished.duration == pytest.approx(60.0, abs=1e-6)

    await store.create_deployment(record("older-ok", created_at=T0 - 100, state="succeeded"))
    await store.create_deployment(record("newer-failed", created_at=T0 + 100, state="failed"))
    await store.create_deployment(record("dev-running", environment="dev", created_at=T0 + 50))
    await store.create_deployment(record("web-pending", service="web", created_at=T0 + 10))

    listed = await store.list_deployments()
    assert [r.id for r in listed] == [
        "newer-failed",
        "dev-running",
        "web-pending",
        "3f2a91c0aaaa",
        "older-ok",
    ]
    prod = await store.list_deployments(service="api", environment="prod", limit=2)
    assert [r.id for r in prod] == ["newer-failed", "3f2a91c0aaaa"]

    best = await store.last_successful("api", "prod")
    assert best is not None and best.id == "3f2a91c0aaaa"  # newest succeeded, failed one skipped
    assert await store.last_successful("api", "dev") is None
    assert sorted(r.id for r in await store.unfinished()) == ["dev-running", "web-pending"]


async def check_id_errors(store: SqlHistoryStore) -> None:
    """Unknown, too short and ambiguous ids raise StoreError with a sentence saying so."""
    await store.create_deployment(record("abcd1111"))
    await store.create_deployment(record("abcd2222"))
    with pytest.raises(StoreError, match="no deployment whose id starts with 'ffff'"):
        await store.get_deployment("ffff")
    with pytest.raises(StoreError, match="at least 4"):
        await store.get_deployment("abc")
    with pytest.raises(StoreError, match=r"more than one deployment \(abcd\d{4}, abcd\d{4}\)"):
        await store.get_deployment("abcd")
    with pytest.raises(StoreError, match="no deployment nope"):
        await store.update_deployment("nope", state=DeploymentState.FAILED)
    with pytest.raises(StoreError, match="already in the history"):
        await store.create_deployment(record("abcd1111"))
    event = DeploymentEvent("nope", EventKind.DECISION, "x")
    with pytest.raises(StoreError, match="not in the history"):
        await store.record_event(event)


def timeline(deployment_id: str) -> list[DeploymentEvent]:
    """A small rollout: one batch, one new instance with a hook, one old instance drained."""
    steps: list[tuple[EventKind, dict[str, Any]]] = [
        (EventKind.BATCH_STARTED, {"batch": 1, "of": 2, "instances": ["i1"]}),
        (EventKind.INSTANCE_STARTING, {"instance": "i1", "revision": "abc", "port": 8001}),
        (EventKind.HEALTH_PROBE, {"instance": "i1", "ok": False, "detail": "503", "seconds": 0.01}),
        (EventKind.HEALTH_PROBE, {"instance": "i1", "ok": True, "detail": "200", "seconds": 0.02}),
        (EventKind.INSTANCE_HEALTHY, {"instance": "i1", "seconds": 1.0, "probes": 2}),
        (EventKind.HOOK_STARTED, {"hook": "ValidateService", "instance": "i1", "command": "./v"}),
        (EventKind.HOOK_OUTPUT, {"hook": "ValidateService", "instance": "i1", "line": "one"}),
        (EventKind.HOOK_OUTPUT, {"hook": "AfterInstall", "instance": "i2", "line": "not ours"}),
        (EventKind.HOOK_OUTPUT, {"hook": "ValidateService", "instance": "i1", "line": "two"}),
        (
            EventKind.HOOK_FINISHED,
            {"hook": "ValidateService", "instance": "i1", "exit_code": 0, "seconds": 0.5},
        ),
        (EventKind.TRAFFIC_ADDED, {"instance": "i1"}),
        (EventKind.DRAIN_STARTED, {"instance": "old1"}),
        (EventKind.DRAIN_FINISHED, {"instance": "old1", "seconds": 0.3, "forced": False}),
        (EventKind.INSTANCE_STOPPED, {"instance": "old1", "exit_code": 0}),
        (EventKind.BATCH_FINISHED, {"batch": 1, "ok": True, "seconds": 2.5}),
    ]
    return [
        DeploymentEvent(deployment_id, kind, f"step {n}", data, at=T0 + n)
        for n, (kind, data) in enumerate(steps, start=1)
    ]


async def check_events_and_derived_tables(store: SqlHistoryStore) -> None:
    """Events come back in order with seq 1..n; batches, instances, hook runs and health
    results are filled from them."""
    await store.create_deployment(record("dep1"))
    await store.create_deployment(record("dep2"))
    sent = timeline("dep1")
    for event in sent:
        await store.record_event(event)
    await store.record_event(DeploymentEvent("dep2", EventKind.DECISION, "other", {"k": [1]}))

    got = await store.events("dep1")
    assert [seq for seq, _ in got] == list(range(1, len(sent) + 1))
    assert [event for _, event in got] == sent
    assert [seq for seq, _ in await store.events("dep1", after=13)] == [14, 15]
    [(seq, other)] = await store.events("dep2")
    assert (seq, other.kind, other.message, other.data) == (
        1,
        EventKind.DECISION,
        "other",
        {"k": [1]},
    )

    [batch] = rows(store, BatchRow, "dep1")
    assert (batch.batch, batch.total, batch.instances) == (1, 2, ["i1"])
    assert (batch.started_at, batch.finished_at) == (T0 + 1, T0 + 15)
    assert (batch.ok, batch.seconds) == (True, 2.5)

    instances = {row.instance_id: row for row in rows(store, InstanceRow, "dep1")}
    new, old = instances["i1"], instances["old1"]
    assert (new.state, new.revision, new.port) == ("in_service", "abc", 8001)
    assert (new.started_at, new.healthy_at, new.traffic_at) == (T0 + 2, T0 + 5, T0 + 11)
    assert new.stopped_at is None
    assert (old.state, old.drain_started_at, old.drain_finished_at) == ("stopped", T0 + 12, T0 + 13)
    assert (old.stopped_at, old.exit_code, old.revision) == (T0 + 14, 0, None)

    [hook] = rows(store, HookRunRow, "dep1")
    assert (hook.hook, hook.instance_id, hook.command) == ("ValidateService", "i1", "./v")
    assert (hook.exit_code, hook.seconds, hook.ok) == (0, 0.5, True)
    assert (hook.started_at, hook.finished_at, hook.output) == (T0 + 6, T0 + 10, ["one", "two"])

    probes = rows(store, HealthResultRow, "dep1")
    assert [(p.instance_id, p.ok, p.detail, p.at) for p in probes] == [
        ("i1", False, "503", T0 + 3),
        ("i1", True, "200", T0 + 4),
    ]
    assert rows(store, BatchRow, "dep2") == []


async def check_lock_held(store: SqlHistoryStore) -> None:
    """A live holder keeps the lock: LockHeld names its deployment; only it can release."""
    await store.acquire_lock("api", "prod", holder("3f2a91c0deadbeef"))
    await store.acquire_lock("api", "dev", holder("other-env"))  # other environments are free
    with pytest.raises(LockHeld) as caught:
        await store.acquire_lock("api", "prod", holder("second"))
    message = str(caught.value)
    assert message.startswith("api/prod is being deployed by deployment 3f2a91c0 (pid ")
    assert f"pid {os.getpid()} on {socket.gethostname()}" in message
    assert message.endswith("ago): wait for it, or use --wait")

    await store.acquire_lock("api", "prod", holder("3f2a91c0deadbeef"))  # same deployment: fine
    await store.release_lock("api", "prod", "second")  # not the holder: nothing happens
    current = await store.lock_holder("api", "prod")
    assert current is not None and current.deployment_id == "3f2a91c0deadbeef"
    await store.release_lock("api", "prod", "3f2a91c0deadbeef")
    assert await store.lock_holder("api", "prod") is None
    await store.acquire_lock("api", "prod", holder("second"))
    assert store.last_stale_release is None


async def check_stale_lock(store: SqlHistoryStore) -> None:
    """A holder whose process exited, or whose pid now names another process, is replaced; one
    on another host is never judged dead."""
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    ticks = process_start_ticks(child.pid)
    await child.wait()
    assert process_start_ticks(child.pid) is None
    if ticks is None:  # it exited before we read it: any start time names a dead process
        ticks = 1
    await store.acquire_lock("api", "prod", holder("dead", pid=child.pid, pid_start=ticks))
    await store.acquire_lock("api", "prod", holder("new"))
    current = await store.lock_holder("api", "prod")
    assert current is not None and current.deployment_id == "new"
    released = store.last_stale_release
    assert released is not None and released.holder.deployment_id == "dead"
    assert f"pid {child.pid} is not running" in released.describe()

    own_ticks = process_start_ticks(os.getpid())
    assert own_ticks is not None
    await store.acquire_lock("api", "stage", holder("reused", pid_start=own_ticks + 1))
    await store.acquire_lock("api", "stage", holder("after-reuse"))
    released = store.last_stale_release
    assert released is not None and "start time differs" in released.reason

    remote = holder("remote", pid=child.pid, pid_start=ticks, hostname="elsewhere.example")
    await store.acquire_lock("api", "qa", remote)
    with pytest.raises(LockHeld, match=r"deployment remote \(pid \d+ on elsewhere\.example"):
        await store.acquire_lock("api", "qa", holder("local"))


async def check_lock_race(url: str, contenders: int = 2) -> None:
    """Processes that try to take the same free lock at once: exactly one wins."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CONTENDER,
            url,
            f"racer{n}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for n in range(contenders)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
            assert line == b"ready\n"
        for proc in procs:  # all are waiting on stdin: release them together
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
        await asyncio.gather(*(proc.stdin.drain() for proc in procs if proc.stdin))
        answers = []
        for proc in procs:
            assert proc.stdout is not None
            answers.append((await asyncio.wait_for(proc.stdout.readline(), 30)).decode())
        assert sorted(answer.split()[0] for answer in answers) == ["held"] * (contenders - 1) + [
            "won"
        ]
        losers = [answer for answer in answers if answer.startswith("held")]
        assert all("api/prod is being deployed by deployment racer" in a for a in losers)
    finally:
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), timeout=30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def check_migration_matches_models(store: SqlHistoryStore) -> None:
    """The migrated schema equals the models: Alembic's compare_metadata finds no difference."""
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        assert set(context.get_current_heads()) == HEAD_REVISIONS


# -- SQLite -----------------------------------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlHistoryStore]:
    opened = open_store(f"sqlite:///{tmp_path / 'state' / 'history.db'}")
    yield opened
    await opened.close()


async def test_round_trip(store: SqlHistoryStore) -> None:
    await check_round_trip(store)


async def test_id_errors(store: SqlHistoryStore) -> None:
    await check_id_errors(store)


async def test_events_and_derived_tables(store: SqlHistoryStore) -> None:
    await check_events_and_derived_tables(store)


async def test_lock_held(store: SqlHistoryStore) -> None:
    await check_lock_held(store)


async def test_stale_lock_is_taken_over(store: SqlHistoryStore) -> None:
    await check_stale_lock(store)


@pytest.mark.slow  # starts Python processes that import SQLAlchemy: several seconds
async def test_lock_race_between_processes_has_one_winner(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    open_store(url).engine.dispose()  # migrate first so the racers only race for the lock
    await check_lock_race(url)


async def test_migration_matches_models(store: SqlHistoryStore) -> None:
    check_migration_matches_models(store)


async def test_open_creates_folder_uses_wal_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "history.db"
    first = open_store(f"sqlite:///{path}")
    await first.create_deployment(record("keep1234"))
    await first.close()
    assert path.is_file()
    again = open_store(f"sqlite:///{path}")  # already at head: the upgrade does nothing
    assert (await again.get_deployment("keep")).id == "keep1234"
    with again.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
    await again.close()


async def test_two_stores_on_one_file_number_events_without_gaps(tmp_path: Path) -> None:
    """Two stores (two connections, as two processes would have) appending at once still give
    each event its own sequence number: BEGIN IMMEDIATE serializes the read-then-insert."""
    url = f"sqlite:///{tmp_path / 'history.db'}"
    one, two = open_store(url), open_store(url)
    await one.create_deployment(record("shared"))
    writes = [
        store.record_event(DeploymentEvent("shared", EventKind.DECISION, f"{name}{n}"))
        for n in range(20)
        for store, name in ((one, "a"), (two, "b"))
    ]
    await asyncio.gather(*writes)
    seqs = [seq for seq, _ in await one.events("shared")]
    assert seqs == list(range(1, 41))
    await one.close()
    await two.close()


async def test_in_memory_store_works_across_threads() -> None:
    memory = open_store("sqlite://")
    await memory.create_deployment(record("mem12345"))
    assert [r.id for r in await memory.list_deployments()] == ["mem12345"]
    await memory.close()


async def wait_until_sleeping(clock: FakeClock, task: asyncio.Task[None]) -> None:
    """Poll (bounded) until `task` sleeps on the fake clock, i.e. it found the lock held."""
    deadline = time.monotonic() + 30
    while clock.sleepers == 0 and not task.done():
        assert time.monotonic() < deadline, "wait_for_lock never slept"
        await asyncio.sleep(0.005)


async def test_wait_for_lock_takes_it_once_released(tmp_path: Path) -> None:
    clock = FakeClock()
    store = open_store(f"sqlite:///{tmp_path / 'history.db'}", clock=clock)
    await store.acquire_lock("api", "prod", holder("first"))
    waiting = asyncio.create_task(
        store.wait_for_lock("api", "prod", holder("second"), timeout=30, poll=0.2)
    )
    await wait_until_sleeping(clock, waiting)
    assert not waiting.done()  # the lock was held, so it waits
    await store.release_lock("api", "prod", "first")
    await clock.advance(0.2)
    await asyncio.wait_for(waiting, timeout=30)
    current = await store.lock_holder("api", "prod")
    assert current is not None and current.deployment_id == "second"
    await store.close()


async def test_wait_for_lock_gives_up_after_timeout(tmp_path: Path) -> None:
    clock = FakeClock()
    store = open_store(f"sqlite:///{tmp_path / 'history.db'}", clock=clock)
    await store.acquire_lock("api", "prod", holder("first1234"))
    waiting = asyncio.create_task(
        store.wait_for_lock("api", "prod", holder("second"), timeout=1.0, poll=0.2)
    )
    sleeps = 0
    while sleeps < 20:  # 1 s / 0.2 s: five sleeps, then it gives up
        await wait_until_sleeping(clock, waiting)
        if waiting.done():
            break
        sleeps += 1
        await clock.advance(0.2)
    with pytest.raises(LockHeld, match=r"deployment first123 .*gave up after waiting 1\.0 s"):
        await waiting
    assert 5 <= sleeps <= 6
    assert clock.monotonic() - 1000.0 >= 1.0
    await store.close()


def test_bad_urls_raise_store_error_with_the_password_masked(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a database URL"):
        open_store("history.db")
    with pytest.raises(StoreError, match="supports SQLite and PostgreSQL, not 'mysql'"):
        open_store("mysql://root:hunter2@localhost/db")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot create"):
        open_store(f"sqlite:///{blocker / 'sub' / 'history.db'}")
    with socket.socket() as sock:  # a port nobody listens on: connecting is refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StoreError) as caught:
        open_store(f"postgresql://zd:hunter2@127.0.0.1:{port}/history")
    message = str(caught.value)
    assert message.startswith("cannot open the history database at postgresql+psycopg://zd:***@")
    assert "hunter2" not in message and "refused" in message.lower()


def test_store_repr_hides_the_password() -> None:
    store = SqlHistoryStore("postgresql://zd:hunter2@127.0.0.1:5432/history")
    assert "hunter2" not in repr(store) and "***" in repr(store)
    store.engine.dispose()


def test_head_revision_constant_is_the_newest_migration() -> None:
    """open_store skips Alembic at HEAD_REVISIONS: they must be the real heads."""
    script = ScriptDirectory.from_config(alembic_config())
    assert set(script.get_heads()) == HEAD_REVISIONS
    assert (MIGRATIONS / "env.py").is_file() and (MIGRATIONS / "script.py.mako").is_file()


async def test_database_errors_become_store_errors_that_say_what_failed(
    store: SqlHistoryStore,
) -> None:
    with store.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE events")
    await store.create_deployment(record("dep12345"))
    with pytest.raises(StoreError) as caught:
        await store.events("dep12345")
    message = str(caught.value)
    assert message.startswith(f"the history database at {store.url} could not read the events")
    assert message.endswith("no such table: events")


async def test_a_database_from_a_newer_zerodown_is_refused_with_a_hint(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    store = open_store(url)
    with store.engine.begin() as connection:
        # one row per migration branch head: replace them all by one unknown revision
        connection.exec_driver_sql("DELETE FROM alembic_version")
        connection.exec_driver_sql("INSERT INTO alembic_version (version_num) VALUES ('9999')")
    await store.close()
    with pytest.raises(StoreError, match=r"cannot migrate .*\(a newer zerodown wrote this"):
        open_store(url)
