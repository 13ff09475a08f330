"""The deploy engine: deployments as recorded state machines, strategies, rollback."""
