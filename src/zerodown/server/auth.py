"""API tokens: created by `zerodown token create NAME`, shown once, stored as sha256 hashes.

The API asks for `Authorization: Bearer <token>` on every action (deploy, rollback, abort,
promote) and, when `server.read_only_public` is false, on every read too.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from zerodown.config.model import NAME as NAME_PATTERN
from zerodown.errors import ConfigError, StoreError
from zerodown.store.api_schema import ApiTokenRow

log = logging.getLogger(__name__)

TOKEN_PREFIX = "zd_"
T = TypeVar("T")


@dataclass(frozen=True)
class TokenInfo:
    """A token as `zerodown token list` shows it (never its secret)."""

    name: str
    created_at: float
    last_used_at: float | None


def hash_token(token: str) -> str:
    """The sha256 (hex) a token is stored as."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """Tokens in the history database (table `api_tokens`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def create(self, name: str) -> str:
        """Make a token named `name` and return its secret (the only time it is seen)."""
        if not NAME_PATTERN.match(name):
            raise ConfigError(
                f"token name {name!r}: use lowercase letters, digits and '-', "
                "starting with a letter",
                field="NAME",
            )
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)

        def insert() -> None:
            with self.engine.begin() as conn:
                found = conn.execute(
                    sa.select(ApiTokenRow.name).where(ApiTokenRow.name == name)
                ).first()
                if found is not None:
                    raise ConfigError(
                        f"a token named {name!r} exists: revoke it first "
                        f"(zerodown token revoke {name})"
                    )
                conn.execute(
                    sa.insert(ApiTokenRow).values(
                        name=name, token_hash=hash_token(token), created_at=time.time()
                    )
                )

        await self._run("create a token", insert)
        return token

    async def list(self) -> list[TokenInfo]:
        """Every token, oldest first."""

        def read() -> list[TokenInfo]:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(ApiTokenRow).order_by(ApiTokenRow.created_at))
                return [TokenInfo(r.name, r.created_at, r.last_used_at) for r in rows]

        return await self._run("list the tokens", read)

    async def revoke(self, name: str) -> bool:
        """Delete the token `name`; False if there was none."""

        def delete() -> bool:
            with self.engine.begin() as conn:
                done = conn.execute(sa.delete(ApiTokenRow).where(ApiTokenRow.name == name))
                return bool(done.rowcount)

        return await self._run("revoke a token", delete)

    async def verify(self, token: str) -> str | None:
        """The name of the token `token`, or None; records when it was used."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        digest = hash_token(token)

        def check() -> str | None:
            with self.engine.connect() as conn:
                row = conn.execute(
                    sa.select(ApiTokenRow.name, ApiTokenRow.token_hash).where(
                        ApiTokenRow.token_hash == digest
                    )
                ).first()
            # The lookup is by hash; compare again in constant time all the same.
            if row is None or not hmac.compare_digest(row.token_hash, digest):
                return None
            # Its own write transaction, after the read: SQLite refuses a read transaction
            # that turns into a write while another writer committed ("database is locked"
            # at once, no busy wait). And only a record of use: a busy database never
            # refuses a valid token.
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        sa.update(ApiTokenRow)
                        .where(ApiTokenRow.name == row.name)
                        .values(last_used_at=time.time())
                    )
            except OperationalError as exc:
                log.warning("token %s used; its last use not recorded: %s", row.name, exc)
            return str(row.name)

        return await self._run("check a token", check)

    async def _run(self, doing: str, operation: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(operation)
        except SQLAlchemyError as exc:
            raise StoreError(f"could not {doing} in the history database: {exc}") from exc
