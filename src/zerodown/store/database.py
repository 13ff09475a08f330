"""The SQL database under the history store: its URL (psycopg 3 for PostgreSQL, passwords
masked in every message), the engine (SQLite in WAL mode with a busy timeout; write transactions
BEGIN IMMEDIATE when asked with the `IMMEDIATE` execution option) and the packaged Alembic
migrations."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from zerodown.errors import StoreError
from zerodown.store.schema import dump_json

if TYPE_CHECKING:
    from alembic.config import Config


MIGRATIONS = Path(__file__).with_name("migrations")


def _migration_heads() -> frozenset[str]:
    """The newest migrations (several when features add branches of their own), read from the
    version files without importing Alembic; a test checks Alembic agrees."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for file in (MIGRATIONS / "versions").glob("*.py"):
        text = file.read_text()
        found = re.search(r'^revision(?:: str)? = "([^"]+)"', text, re.MULTILINE)
        down = re.search(r"^down_revision[^=]*= (.+)$", text, re.MULTILINE)
        if found:
            revisions.add(found.group(1))
        if down:
            parents.update(re.findall(r'"([^"]+)"', down.group(1)))
    return frozenset(revisions - parents)


# Opening a store that is already at the heads skips importing Alembic (most of a CLI command's
# start-up time).
HEAD_REVISIONS = _migration_heads()
BUSY_TIMEOUT_MS = 10_000
# Any fixed number: PostgreSQL sessions that migrate at once queue on this advisory lock.
MIGRATION_LOCK_KEY = 0x7A65726F646F776E
IMMEDIATE = "zerodown_immediate"  # execution option: begin SQLite transactions IMMEDIATE
_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def mask_url(text: str) -> str:
    """`text` with the password of any URL in it replaced by ***."""
    return _PASSWORD_IN_URL.sub(r"\1***@", text)


def database_url(url: str) -> URL:
    """Parse `url`, choosing psycopg 3 for PostgreSQL; raise `StoreError` for anything else."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(
            f"{mask_url(url)!r} is not a database URL: use sqlite:///path/to/history.db "
            "or postgresql://user@host/dbname"
        ) from exc
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return parsed
    raise StoreError(
        f"the history store supports SQLite and PostgreSQL, not {backend!r} "
        f"(in {parsed.render_as_string(hide_password=True)})"
    )


def _is_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:")


def open_engine(url: URL) -> Engine:
    """The engine for `url`: PostgreSQL with pre-ping; SQLite (its folder created) with WAL, a
    busy timeout and foreign keys, every BEGIN issued by zerodown (IMMEDIATE when asked)."""
    if url.get_backend_name() != "sqlite":
        try:
            return sa.create_engine(url, pool_pre_ping=True, json_serializer=dump_json)
        except ImportError as exc:
            raise StoreError(
                "a PostgreSQL history store needs psycopg 3: pip install 'zerodown[postgres]'"
            ) from exc
    memory = _is_memory(url)
    if not memory:
        folder = Path(str(url.database)).expanduser().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {folder} for the history database: {exc}") from exc
    options: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if memory:  # one shared connection, or every thread would see its own empty database
        options["poolclass"] = StaticPool
    engine = sa.create_engine(url, json_serializer=dump_json, **options)

    @sa_event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit at the driver level: pysqlite's own implicit BEGIN can't be IMMEDIATE,
        # so `_begin` below issues every BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not memory:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: safe, fewer fsyncs
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @sa_event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(IMMEDIATE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic config for the packaged migrations (no alembic.ini needed)."""
    from alembic.config import Config  # Alembic loads only when migrating

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def current_revisions(connection: Connection) -> frozenset[str]:
    """The Alembic revisions the database is at (empty: never migrated)."""
    if not sa.inspect(connection).has_table("alembic_version"):
        return frozenset()
    rows = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars()
    return frozenset(str(row) for row in rows)
