"""The SQL history store against a real PostgreSQL server started for this module.

The scenarios are the ones tests/unit/test_store.py runs on SQLite; here they run through
psycopg 3 on PostgreSQL, plus the migration-equals-models check for that dialect.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType

import psycopg
import pytest

from zerodown.store.sql import SqlHistoryStore, open_store

pytestmark = pytest.mark.slow  # initdb + server start take several seconds

PG_USER = "zerodown-pg"  # initdb and postgres refuse to run as root
BIN_DIRS = ("/usr/local/bin", *sorted(str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")))


def _load_scenarios() -> ModuleType:
    # The unit test module holds the scenarios; load it by path so this works under any
    # pytest import mode and when this module runs alone.
    path = Path(__file__).resolve().parents[1] / "unit" / "test_store.py"
    spec = importlib.util.spec_from_file_location("zerodown_store_scenarios", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


scenarios = _load_scenarios()


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in BIN_DIRS:
        candidate = Path(folder) / name
        if candidate.is_file():
            return str(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_as_postgres_user() -> list[str]:
    """The command prefix that runs PostgreSQL's tools as a non-root user (empty if not root)."""
    if os.geteuid() != 0:
        return []
    if subprocess.run(["id", "-u", PG_USER], capture_output=True).returncode != 0:
        created = subprocess.run(
            ["useradd", "-r", "-M", "-s", "/usr/sbin/nologin", PG_USER], capture_output=True
        )
        # Another test session may have created it at the same moment: check again.
        if subprocess.run(["id", "-u", PG_USER], capture_output=True).returncode != 0:
            pytest.fail(f"cannot create the {PG_USER} user: {created.stderr.decode()}")
    return ["runuser", "-u", PG_USER, "--"]


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1; yields its admin URL without a database."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed")
    prefix = _run_as_postgres_user()
    # Not under pytest's tmp_path: its parents are private to root, and postgres runs as PG_USER.
    home = Path(tempfile.mkdtemp(prefix="zerodown-pg-"))
    if prefix:
        shutil.chown(home, PG_USER, PG_USER)
    data, log, port = home / "data", home / "server.log", _free_port()

    def run(*command: str) -> subprocess.CompletedProcess[bytes]:
        # cwd: the tools chdir-check it; -l below keeps the server off our pipes.
        env = {**os.environ, "LC_ALL": "C"}
        return subprocess.run(
            [*prefix, *command], cwd=home, env=env, capture_output=True, timeout=120
        )

    try:
        init = run(
            initdb,
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-locale",
            "-E",
            "UTF8",
            "--no-sync",
        )
        assert init.returncode == 0, init.stderr.decode()
        options = f"-k {home} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off"
        start = run(pg_ctl, "-D", str(data), "-o", options, "-l", str(log), "-w", "start")
        assert start.returncode == 0, start.stderr.decode() + log.read_text(errors="replace")
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        if (data / "postmaster.pid").exists():
            run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(home, ignore_errors=True)


_databases = itertools.count(1)


@pytest.fixture
def pg_url(postgres_server: str) -> str:
    """A fresh, empty database on the server for one test."""
    name = f"zd_test_{os.getpid()}_{next(_databases)}"
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return f"{postgres_server}/{name}"


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[SqlHistoryStore]:
    opened = open_store(pg_url)
    yield opened
    await opened.close()


async def test_round_trip(store: SqlHistoryStore) -> None:
    await scenarios.check_round_trip(store)


async def test_id_errors(store: SqlHistoryStore) -> None:
    await scenarios.check_id_errors(store)


async def test_events_and_derived_tables(store: SqlHistoryStore) -> None:
    await scenarios.check_events_and_derived_tables(store)


async def test_lock_held(store: SqlHistoryStore) -> None:
    await scenarios.check_lock_held(store)


async def test_stale_lock_is_taken_over(store: SqlHistoryStore) -> None:
    await scenarios.check_stale_lock(store)


async def test_lock_race_between_processes_has_one_winner(pg_url: str) -> None:
    open_store(pg_url).engine.dispose()  # migrate first so the racers only race for the lock
    await scenarios.check_lock_race(pg_url)


async def test_migration_matches_models(store: SqlHistoryStore) -> None:
    scenarios.check_migration_matches_models(store)
    assert store.url.startswith("postgresql+psycopg://")  # postgresql:// chose psycopg 3


async def test_reopening_a_migrated_database_keeps_the_history(pg_url: str) -> None:
    first = open_store(pg_url)
    await first.create_deployment(scenarios.record("keep1234"))
    await first.close()
    again = open_store(pg_url)
    assert (await again.get_deployment("keep")).id == "keep1234"
    await again.close()
