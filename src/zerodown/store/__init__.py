"""The history store: deployments, events, locks (SQLite by default, PostgreSQL by URL)."""
