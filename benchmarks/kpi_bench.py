"""KPI query time on a generated history of 10,000 deployments in SQLite (goal < 200 ms).

`generate_history` is also what the KPI unit tests check against a direct Python calculation.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from benchmarks.machine import MachineFacts
from benchmarks.report import Section, Table
from zerodown.server.kpis import compute_kpis_sync
from zerodown.store.sql import open_store

GOAL_SECONDS = 0.2
SERVICES = ("api", "web", "worker", "ai")
ENVIRONMENTS = ("dev", "prod")


@dataclass(frozen=True)
class GeneratedDeployment:
    """One generated deployment, as inserted (for a direct calculation to compare with)."""

    id: str
    service: str
    environment: str
    state: str
    kind: str
    created_at: float
    started_at: float | None
    finished_at: float
    commit_time: float | None
    rollback_started_at: float | None


def generate_history(
    engine: Engine, count: int, *, until: float, days: float = 90.0, seed: int = 7
) -> list[GeneratedDeployment]:
    """Insert `count` finished deployments spread over `days` days before `until` (about 90 %
    succeeded, 6 % rolled back with a rollback_started event, 2 % failed, 3 % manual rollbacks)."""
    rng = random.Random(seed)
    rows: list[GeneratedDeployment] = []
    for _ in range(count):
        created = until - rng.uniform(0, days * 86400.0)
        kind = "rollback" if rng.random() < 0.03 else "deploy"
        roll = rng.random()
        state = "succeeded" if roll < 0.9 else "rolled_back" if roll < 0.97 else "failed"
        started = None if state == "failed" and rng.random() < 0.3 else created + rng.uniform(0, 5)
        duration = rng.lognormvariate(4.0, 0.8)
        finished = (started or created) + duration
        rollback_at = finished - rng.uniform(5, 300) if state == "rolled_back" else None
        commit = created - rng.uniform(60, 86400) if rng.random() < 0.8 else None
        rows.append(
            GeneratedDeployment(
                id=uuid.UUID(int=rng.getrandbits(128)).hex,
                service=rng.choice(SERVICES),
                environment=rng.choice(ENVIRONMENTS),
                state=state,
                kind=kind,
                created_at=created,
                started_at=started,
                finished_at=finished,
                commit_time=commit,
                rollback_started_at=rollback_at,
            )
        )
    deployments = sa.table(
        "deployments",
        *(
            sa.column(name)
            for name in [
                "id",
                "service",
                "environment",
                "revision",
                "strategy",
                "state",
                "actor",
                "created_at",
                "kind",
                "started_at",
                "finished_at",
                "commit_time",
                "labels",
            ]
        ),
    )
    events = sa.table(
        "events", *(sa.column(n) for n in ("deployment_id", "seq", "at", "kind", "message", "data"))
    )
    with engine.begin() as conn:
        conn.execute(
            deployments.insert(),
            [
                {
                    "id": r.id,
                    "service": r.service,
                    "environment": r.environment,
                    "revision": r.id[:12],
                    "strategy": "rolling",
                    "state": r.state,
                    "actor": "generator",
                    "created_at": r.created_at,
                    "kind": r.kind,
                    "started_at": r.started_at,
                    "finished_at": r.finished_at,
                    "commit_time": r.commit_time,
                    "labels": "{}",
                }
                for r in rows
            ],
        )
        conn.execute(
            events.insert(),
            [
                {
                    "deployment_id": r.id,
                    "seq": seq,
                    "at": at,
                    "kind": kind,
                    "message": kind,
                    "data": "{}",
                }
                for r in rows
                for seq, (kind, at) in enumerate(
                    [("state", r.created_at)]
                    + (
                        [("rollback_started", r.rollback_started_at)]
                        if r.rollback_started_at
                        else []
                    )
                    + [("state", r.finished_at)],
                    start=1,
                )
            ],
        )
    return rows


def measure(count: int, repeats: int) -> tuple[list[float], int]:
    """Seconds per KPI computation (all services and environments, 30 days) on `count` rows."""
    with tempfile.TemporaryDirectory(prefix="zerodown-kpi-bench-") as folder:
        store = open_store(f"sqlite:///{Path(folder) / 'history.db'}")
        try:
            until = time.time()
            generate_history(store.engine, count, until=until)
            timings = []
            groups = 0
            for _ in range(repeats):
                started = time.perf_counter()
                result = compute_kpis_sync(store.engine, since=until - 30 * 86400.0, until=until)
                timings.append(time.perf_counter() - started)
                groups = len(result)
        finally:
            store.engine.dispose()
    return timings, groups


async def run(*, quick: bool, machine: MachineFacts) -> Section:
    """KPI query time on 10,000 deployments (a quick run repeats fewer times)."""
    started = datetime.now(UTC)
    repeats = 5 if quick else 20
    timings, groups = measure(10_000, repeats)
    median, worst = statistics.median(timings), max(timings)
    return Section(
        key="kpis",
        title="KPIs: query time on 10,000 deployments",
        goal=f"KPIs for every service and environment in < {GOAL_SECONDS * 1000:.0f} ms",
        met=worst < GOAL_SECONDS,
        tables=(
            Table(
                caption=(
                    f"10,000 deployments over 90 days (4 services x 2 environments), KPIs over "
                    f"the last 30 days, {repeats} runs; {groups} service/environment rows."
                ),
                headers=("figure", "value"),
                rows=(
                    ("median", f"{median * 1000:.1f} ms"),
                    ("worst", f"{worst * 1000:.1f} ms"),
                    ("first run (cold page cache of SQLite)", f"{timings[0] * 1000:.1f} ms"),
                ),
            ),
        ),
        limits=(
            "Seven SQL statements (aggregates, two window-function percentiles, correlated "
            "subqueries for time to restore and rollback time) on the store's indexes; the "
            "cost grows with the deployments inside the period, not the whole history.",
        ),
        measured_at=started,
        measured_on=machine.one_line() + (" (quick run)" if quick else ""),
        method="SqlHistoryStore on a temporary SQLite file, rows inserted in bulk, "
        "`zerodown.server.kpis.compute_kpis_sync` timed with perf_counter.",
    )
