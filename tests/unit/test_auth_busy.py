"""A valid token is accepted while another process holds SQLite's write lock (a deploy writing
its events): recording its last use is skipped, the check never fails with "database is locked"
(a dashboard page failed to load that way in a CI run)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlalchemy as sa

from zerodown.server.auth import TokenStore
from zerodown.store.sql import open_store


async def test_a_valid_token_passes_while_another_writer_holds_the_database(
    tmp_path: Path,
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'history.db'}")
    try:
        engine = store.sql_engine()
        assert engine is not None
        quick = sa.create_engine(engine.url, connect_args={"timeout": 0.2})  # do not wait 5 s
        tokens = TokenStore(quick)
        token = await tokens.create("browser")
        writer = sqlite3.connect(tmp_path / "history.db")
        try:
            writer.execute("BEGIN IMMEDIATE")  # another process is writing now
            assert await tokens.verify(token) == "browser"
            assert await tokens.verify("zd_not-a-token") is None
        finally:
            writer.rollback()
            writer.close()
        quick.dispose()
    finally:
        await store.close()
