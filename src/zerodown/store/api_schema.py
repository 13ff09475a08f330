"""The API's table: bearer tokens for the control plane's HTTP API, stored as sha256 hashes.

A token is 256 random bits, so a plain sha256 is enough to make a leaked database useless for
calling the API (a slow hash such as scrypt only matters for guessable secrets like passwords).
"""

from __future__ import annotations

from sqlalchemy import Double, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from zerodown.store.schema import NAME, Base


class ApiTokenRow(Base):
    """One API token: its name, the sha256 of its secret, and when it was created and last used."""

    __tablename__ = "api_tokens"
    __table_args__ = (Index("ix_api_tokens_token_hash", "token_hash", unique=True),)

    name: Mapped[str] = mapped_column(NAME, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Double)
    last_used_at: Mapped[float | None] = mapped_column(Double)
