"""Delivery KPIs from the history, per service and environment over a period, against the seeds'
targets (pipeline < 30 min, > 95 % success, 0 downtime, rollback < 10 min, >= 2 deploys a week).

Everything is computed by SQL aggregates and window functions in the database (SQLite or
PostgreSQL), so 10,000 deployments take milliseconds, not a replay of every record. Definitions:

- deploy frequency: succeeded deployments of kind `deploy` per week of the period;
- success rate: succeeded / finished deployments of any kind (deploy and manual rollback);
- deploy duration: started -> finished of finished deployments (mean, and p95 by nearest rank);
- rollbacks: automatic (ended `rolled_back`) and manual (`zerodown rollback`); rollback time is
  the automatic rollback's own time (its `rollback_started` event -> finished);
- time to restore: a failed or rolled-back deploy's start -> when the fleet served healthy again:
  its own end when it was rolled back (the previous revision serves again) or failed without
  touching the fleet (no instance started, drained or stopped: what served still serves), else the
  end of the next succeeded deployment of the same service and environment (none yet:
  unrestored);
- change failure rate: deploys that failed or were rolled back, plus succeeded deploys whose next
  deployment was a manual rollback, over finished deploys;
- lead time: commit time -> end of the succeeded deploy (mean and median);
- downtime: seconds with zero healthy targets from the router's per-minute rollups
  (`metric_minutes.zero_healthy_seconds`, which the router counts only once the route has had a
  target serving: a first deploy is no outage); "not measured" (None) when the route has no rollup
  in the period.

Only the configured (service, environment) pairs are listed when the caller names them (`groups`):
an environment removed from zerodown.yml keeps its history in the store but leaves the KPIs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from zerodown.domain.events import DeploymentState
from zerodown.domain.routes import route_name

WEEK = 7 * 86400.0
_TERMINAL = [s.value for s in DeploymentState if s.terminal]
_SUCCEEDED = DeploymentState.SUCCEEDED.value
_BROKEN = [DeploymentState.ROLLED_BACK.value, DeploymentState.FAILED.value]

deployments = sa.table(
    "deployments",
    sa.column("id"),
    sa.column("service"),
    sa.column("environment"),
    sa.column("state"),
    sa.column("kind"),
    sa.column("created_at"),
    sa.column("started_at"),
    sa.column("finished_at"),
    sa.column("commit_time"),
)
events = sa.table("events", sa.column("deployment_id"), sa.column("kind"), sa.column("at"))
# Events that only a deployment which changed the fleet records (Fleet.launch / drain / stop).
_FLEET_CHANGES = ["instance_starting", "drain_started", "instance_stopped", "rollback_started"]


@dataclass(frozen=True)
class Targets:
    """The seeds' goals (TPT-API's KPI list)."""

    pipeline_seconds: float = 30 * 60
    success_rate: float = 0.95
    downtime_seconds: float = 0.0
    rollback_seconds: float = 10 * 60
    deploys_per_week: float = 2.0


@dataclass(frozen=True)
class TargetCheck:
    """One KPI against its target; `met` is None when there is nothing to judge."""

    name: str
    target: str
    value: float | None
    met: bool | None


@dataclass(frozen=True)
class ServiceKpis:
    """The KPIs of one service in one environment over `days` days ending at `until`."""

    service: str
    environment: str
    since: float
    until: float
    deployments: int = 0  # finished deployments of any kind
    succeeded: int = 0
    deploys: int = 0  # finished deployments of kind deploy
    deploys_succeeded: int = 0
    deploys_failed: int = 0  # rolled back or failed
    rollbacks: int = 0  # automatic: ended rolled_back
    manual_rollbacks: int = 0
    duration_mean: float | None = None
    duration_p95: float | None = None
    rollback_seconds_mean: float | None = None
    rollback_seconds_max: float | None = None
    time_to_restore_mean: float | None = None
    time_to_restore_max: float | None = None
    unrestored: int = 0
    reverted_by_hand: int = 0  # succeeded deploys whose next deployment was a manual rollback
    lead_time_mean: float | None = None
    lead_time_median: float | None = None
    downtime_seconds: float | None = None  # None: not measured (no router rollups)
    checks: tuple[TargetCheck, ...] = field(default=())

    @property
    def days(self) -> float:
        """Length of the period in days."""
        return (self.until - self.since) / 86400.0

    @property
    def deploys_per_week(self) -> float:
        """Succeeded deploys per week of the period."""
        return self.deploys_succeeded / max((self.until - self.since) / WEEK, 1e-9)

    @property
    def success_rate(self) -> float | None:
        """Succeeded / finished deployments (None: none finished)."""
        return self.succeeded / self.deployments if self.deployments else None

    @property
    def change_failure_rate(self) -> float | None:
        """Deploys that broke something / finished deploys (None: no deploys)."""
        if not self.deploys:
            return None
        return (self.deploys_failed + self.reverted_by_hand) / self.deploys

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the derived rates and the target checks."""
        data = asdict(self)
        data["days"] = self.days
        data["deploys_per_week"] = self.deploys_per_week
        data["success_rate"] = self.success_rate
        data["change_failure_rate"] = self.change_failure_rate
        data["downtime_measured"] = self.downtime_seconds is not None
        return data


def check_targets(k: ServiceKpis, targets: Targets) -> tuple[TargetCheck, ...]:
    """The seeds' five targets, judged on `k`."""

    def judged(value: float | None, ok: bool) -> bool | None:
        return None if value is None else ok

    p95, rate = k.duration_p95, k.success_rate
    down, rollback = k.downtime_seconds, k.rollback_seconds_max
    return (
        TargetCheck(
            "deploy duration p95",
            f"< {targets.pipeline_seconds / 60:.0f} min",
            p95,
            judged(p95, p95 is not None and p95 < targets.pipeline_seconds),
        ),
        TargetCheck(
            "success rate",
            f"> {targets.success_rate:.0%}",
            rate,
            judged(rate, rate is not None and rate > targets.success_rate),
        ),
        TargetCheck(
            "downtime",
            f"{targets.downtime_seconds:.0f} s",
            down,
            judged(down, down is not None and down <= targets.downtime_seconds),
        ),
        TargetCheck(
            "rollback time (max)",
            f"< {targets.rollback_seconds / 60:.0f} min",
            rollback,
            judged(rollback, rollback is not None and rollback < targets.rollback_seconds),
        ),
        TargetCheck(
            "deploy frequency",
            f">= {targets.deploys_per_week:g} / week",
            k.deploys_per_week,
            k.deploys_per_week >= targets.deploys_per_week,
        ),
    )


Group = tuple[str, str]


def _scope(
    since: float, until: float | None, service: str | None, environment: str | None
) -> list[sa.ColumnElement[bool]]:
    d = deployments.c
    where = [d.created_at >= since, d.state.in_(_TERMINAL)]
    if until is not None:
        where.append(d.created_at < until)
    if service is not None:
        where.append(d.service == service)
    if environment is not None:
        where.append(d.environment == environment)
    return where


def _count(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
    return sa.func.sum(sa.case((condition, 1), else_=0))


def _totals(conn: Connection, where: list[sa.ColumnElement[bool]]) -> dict[Group, dict[str, Any]]:
    d = deployments.c
    is_deploy = d.kind == "deploy"
    succeeded = d.state == _SUCCEEDED
    duration = sa.case((d.started_at.is_not(None), d.finished_at - d.started_at))
    lead = sa.case(
        (succeeded & is_deploy & d.commit_time.is_not(None), d.finished_at - d.commit_time)
    )
    query = (
        sa.select(
            d.service,
            d.environment,
            sa.func.count().label("deployments"),
            _count(succeeded).label("succeeded"),
            _count(is_deploy).label("deploys"),
            _count(is_deploy & succeeded).label("deploys_succeeded"),
            _count(is_deploy & d.state.in_(_BROKEN)).label("deploys_failed"),
            _count(d.state == DeploymentState.ROLLED_BACK.value).label("rollbacks"),
            _count(d.kind == "rollback").label("manual_rollbacks"),
            sa.func.avg(duration).label("duration_mean"),
            sa.func.avg(lead).label("lead_time_mean"),
        )
        .where(*where)
        .group_by(d.service, d.environment)
    )
    return {(row.service, row.environment): dict(row._mapping) for row in conn.execute(query)}


def _percentile(
    conn: Connection,
    where: list[sa.ColumnElement[bool]],
    value: sa.ColumnElement[Any],
    percent: int,
) -> dict[Group, float]:
    """Nearest-rank percentile of `value` per group: the ceil(p/100 * n)-th smallest."""
    d = deployments.c
    ranked = (
        sa.select(
            d.service,
            d.environment,
            value.label("value"),
            sa.func.row_number()
            .over(partition_by=(d.service, d.environment), order_by=value)
            .label("rank"),
            sa.func.count().over(partition_by=(d.service, d.environment)).label("n"),
        )
        .where(*where, value.is_not(None))
        .subquery()
    )
    # Integer floor division (`//`; SQLAlchemy 2 makes `/` a true division): ceil(p * n / 100).
    wanted = (percent * ranked.c.n + 99) // 100
    query = sa.select(ranked.c.service, ranked.c.environment, ranked.c.value).where(
        ranked.c.rank == wanted
    )
    return {(row.service, row.environment): float(row.value) for row in conn.execute(query)}


def _restores(conn: Connection, where: list[sa.ColumnElement[bool]]) -> dict[Group, dict[str, Any]]:
    d = deployments.c
    later = deployments.alias("later")
    next_success = (
        sa.select(later.c.finished_at)
        .where(
            later.c.service == d.service,
            later.c.environment == d.environment,
            later.c.state == _SUCCEEDED,
            later.c.created_at > d.created_at,
        )
        .order_by(later.c.created_at)
        .limit(1)
        .scalar_subquery()
    )
    changed_fleet = (
        sa.select(events.c.deployment_id)
        .where(events.c.deployment_id == d.id, events.c.kind.in_(_FLEET_CHANGES))
        .exists()
    )
    # Rolled back: the previous revision serves again at its end; failed without touching the
    # fleet: what served before never stopped. Otherwise the next success restored it.
    restored_at = sa.case(
        (d.state == DeploymentState.ROLLED_BACK.value, d.finished_at),
        (~changed_fleet, d.finished_at),
        else_=next_success,
    )
    broken = (
        sa.select(
            d.service,
            d.environment,
            (restored_at - sa.func.coalesce(d.started_at, d.created_at)).label("ttr"),
        )
        .where(*where, d.kind == "deploy", d.state.in_(_BROKEN))
        .subquery()
    )
    query = sa.select(
        broken.c.service,
        broken.c.environment,
        sa.func.avg(broken.c.ttr).label("time_to_restore_mean"),
        sa.func.max(broken.c.ttr).label("time_to_restore_max"),
        _count(broken.c.ttr.is_(None)).label("unrestored"),
    ).group_by(broken.c.service, broken.c.environment)
    return {(row.service, row.environment): dict(row._mapping) for row in conn.execute(query)}


def _rollback_times(
    conn: Connection, where: list[sa.ColumnElement[bool]]
) -> dict[Group, dict[str, Any]]:
    d = deployments.c
    started = (
        sa.select(sa.func.min(events.c.at))
        .where(events.c.deployment_id == d.id, events.c.kind == "rollback_started")
        .scalar_subquery()
    )
    rolled = (
        sa.select(d.service, d.environment, (d.finished_at - started).label("seconds"))
        .where(*where, d.state == DeploymentState.ROLLED_BACK.value)
        .subquery()
    )
    query = sa.select(
        rolled.c.service,
        rolled.c.environment,
        sa.func.avg(rolled.c.seconds).label("rollback_seconds_mean"),
        sa.func.max(rolled.c.seconds).label("rollback_seconds_max"),
    ).group_by(rolled.c.service, rolled.c.environment)
    return {(row.service, row.environment): dict(row._mapping) for row in conn.execute(query)}


def _reverted(
    conn: Connection, since: float, until: float, open_ended: list[sa.ColumnElement[bool]]
) -> dict[Group, int]:
    """Succeeded deploys whose next deployment (same service+environment) is a manual rollback;
    `open_ended` has no upper time bound: the next deployment may come after the period."""
    d = deployments.c
    following = (
        sa.select(
            d.service,
            d.environment,
            d.kind,
            d.state,
            d.created_at,
            sa.func.lead(d.kind)
            .over(partition_by=(d.service, d.environment), order_by=d.created_at)
            .label("next_kind"),
        )
        .where(*open_ended)
        .subquery()
    )
    f = following.c
    query = (
        sa.select(f.service, f.environment, sa.func.count().label("n"))
        .where(
            f.created_at >= since,
            f.created_at < until,
            f.kind == "deploy",
            f.state == _SUCCEEDED,
            f.next_kind == "rollback",
        )
        .group_by(f.service, f.environment)
    )
    return {(row.service, row.environment): int(row.n) for row in conn.execute(query)}


def _downtime(
    conn: Connection, since: float, until: float, groups: Sequence[Group]
) -> dict[Group, float | None]:
    """Seconds with zero healthy targets per group from the router's per-minute rollups; None
    for a group whose route has no rollup in the period (or when the table is absent)."""
    if not groups or not sa.inspect(conn).has_table("metric_minutes"):
        return {}
    minutes = sa.table(
        "metric_minutes",
        sa.column("service"),
        sa.column("minute"),
        sa.column("revision"),
        sa.column("zero_healthy_seconds"),
    )
    m = minutes.c
    routes = {route_name(*group): group for group in groups}
    query = (
        sa.select(m.service, sa.func.coalesce(sa.func.sum(m.zero_healthy_seconds), 0).label("down"))
        # Health numbers live on the whole-service rows (revision "").
        .where(m.minute >= since, m.minute < until, m.service.in_(list(routes)), m.revision == "")
        .group_by(m.service)
    )
    return {routes[row.service]: float(row.down) for row in conn.execute(query)}


def compute_kpis_sync(
    engine: Engine,
    *,
    since: float,
    until: float,
    service: str | None = None,
    environment: str | None = None,
    groups: Sequence[Group] | None = None,
    targets: Targets | None = None,
) -> list[ServiceKpis]:
    """KPIs per (service, environment): exactly `groups` when given (the configured ones: a quiet
    one shows zeros, a removed one is left out), else every one with deployments in the period."""
    targets = targets or Targets()
    where = _scope(since, until, service, environment)
    with engine.connect() as conn:
        totals = _totals(conn, where)
        d = deployments.c
        duration_p95 = _percentile(
            conn,
            where,
            sa.case((d.started_at.is_not(None), d.finished_at - d.started_at)),
            95,
        )
        lead_median = _percentile(
            conn,
            [*where, d.kind == "deploy", d.state == _SUCCEEDED],
            sa.case((d.commit_time.is_not(None), d.finished_at - d.commit_time)),
            50,
        )
        restores = _restores(conn, where)
        rollbacks = _rollback_times(conn, where)
        reverted = _reverted(conn, since, until, _scope(since, None, service, environment))
        if groups is None:
            keys = sorted(totals)
        else:
            keys = sorted(
                g
                for g in set(groups)
                if (service is None or g[0] == service)
                and (environment is None or g[1] == environment)
            )
        downtime = _downtime(conn, since, until, keys)
    result = []
    for key in keys:
        fields: dict[str, Any] = {}
        for source in (totals.get(key), restores.get(key), rollbacks.get(key)):
            for name, value in (source or {}).items():
                if name not in ("service", "environment") and value is not None:
                    fields[name] = value
        kpis = ServiceKpis(
            service=key[0],
            environment=key[1],
            since=since,
            until=until,
            duration_p95=duration_p95.get(key),
            lead_time_median=lead_median.get(key),
            reverted_by_hand=reverted.get(key, 0),
            downtime_seconds=downtime.get(key),
            **{name: _typed(name, value) for name, value in fields.items()},
        )
        result.append(_with_checks(kpis, targets))
    return result


def _typed(name: str, value: Any) -> Any:
    """Database numbers as the dataclass wants them (PostgreSQL answers Decimal for sums)."""
    integer = name in ("deployments", "succeeded", "deploys", "deploys_succeeded")
    integer = integer or name in ("deploys_failed", "rollbacks", "manual_rollbacks", "unrestored")
    return int(value) if integer else float(value)


def _with_checks(kpis: ServiceKpis, targets: Targets) -> ServiceKpis:
    return replace(kpis, checks=check_targets(kpis, targets))


async def compute_kpis(
    engine: Engine,
    *,
    days: float = 30.0,
    until: float | None = None,
    service: str | None = None,
    environment: str | None = None,
    groups: Sequence[Group] | None = None,
    targets: Targets | None = None,
) -> list[ServiceKpis]:
    """`compute_kpis_sync` over the last `days` days, in a worker thread."""
    end = time.time() if until is None else until
    return await asyncio.to_thread(
        compute_kpis_sync,
        engine,
        since=end - days * 86400.0,
        until=end,
        service=service,
        environment=environment,
        groups=groups,
        targets=targets,
    )
