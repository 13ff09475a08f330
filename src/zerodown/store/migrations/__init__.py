"""Alembic migrations of the history store, run by `open_store` (no alembic.ini needed)."""
