"""KPIs from SQL aggregates match a direct Python calculation on 10,000 generated deployments."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from benchmarks.kpi_bench import GeneratedDeployment, generate_history

from zerodown.clock import FakeClock
from zerodown.metrics.rollup import MetricsCollector
from zerodown.metrics.source import metrics_source
from zerodown.routers.base import RouteSpec, TargetHealth, TargetSpec
from zerodown.routers.builtin.recorder import MetricsRecorder
from zerodown.routers.builtin.table import RoutingTable
from zerodown.server.kpis import ServiceKpis, Targets, check_targets, compute_kpis_sync
from zerodown.store.sql import SqlHistoryStore, open_store

DAY = 86400.0
UNTIL = 1_800_000_000.0


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SqlHistoryStore, list]]:
    folder: Path = tmp_path_factory.mktemp("kpis")
    store = open_store(f"sqlite:///{folder / 'history.db'}")
    rows = generate_history(store.engine, 10_000, until=UNTIL)
    yield store, rows
    store.engine.dispose()


def nearest_rank(values: list[float], percent: int) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[math.ceil(percent * len(ordered) / 100) - 1]


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def direct(
    rows: list[GeneratedDeployment],
    since: float,
    until: float,
    changed_fleet: frozenset[str] = frozenset(),
) -> dict[tuple, dict]:
    """The KPI definitions of zerodown.server.kpis, one record at a time; `changed_fleet`: ids of
    deployments that started, drained or stopped an instance."""
    by_group: dict[tuple[str, str], list[GeneratedDeployment]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: r.created_at):
        by_group[(r.service, r.environment)].append(r)
    out = {}
    for key, group in by_group.items():
        inside = [r for r in group if since <= r.created_at < until]
        if not inside:
            continue
        deploys = [r for r in inside if r.kind == "deploy"]
        broken = [r for r in deploys if r.state in ("rolled_back", "failed")]
        ttrs = []
        for f in broken:
            start = f.started_at or f.created_at
            # Rolled back, or failed without a fleet change (generated failures record none):
            # restored at its own end.
            if f.state == "rolled_back" or f.id not in changed_fleet:
                ttrs.append(f.finished_at - start)
                continue
            later = [s for s in group if s.state == "succeeded" and s.created_at > f.created_at]
            if later:
                ttrs.append(later[0].finished_at - start)
        after_since = [r for r in group if r.created_at >= since]
        reverted = sum(
            1
            for a, b in itertools.pairwise(after_since)
            if a.created_at < until
            and a.kind == "deploy"
            and a.state == "succeeded"
            and b.kind == "rollback"
        )
        durations = [r.finished_at - r.started_at for r in inside if r.started_at is not None]
        leads = [
            r.finished_at - r.commit_time
            for r in deploys
            if r.state == "succeeded" and r.commit_time is not None
        ]
        rollbacks = [
            r.finished_at - r.rollback_started_at
            for r in inside
            if r.state == "rolled_back" and r.rollback_started_at is not None
        ]
        out[key] = {
            "deployments": len(inside),
            "succeeded": sum(r.state == "succeeded" for r in inside),
            "deploys": len(deploys),
            "deploys_succeeded": sum(r.state == "succeeded" for r in deploys),
            "deploys_failed": len(broken),
            "rollbacks": sum(r.state == "rolled_back" for r in inside),
            "manual_rollbacks": sum(r.kind == "rollback" for r in inside),
            "duration_mean": mean(durations),
            "duration_p95": nearest_rank(durations, 95),
            "lead_time_mean": mean(leads),
            "lead_time_median": nearest_rank(leads, 50),
            "time_to_restore_mean": mean(ttrs),
            "time_to_restore_max": max(ttrs) if ttrs else None,
            "unrestored": len(broken) - len(ttrs),
            "rollback_seconds_mean": mean(rollbacks),
            "rollback_seconds_max": max(rollbacks) if rollbacks else None,
            "reverted_by_hand": reverted,
        }
    return out


def assert_matches(computed: list[ServiceKpis], expected: dict[tuple, dict]) -> None:
    assert {(k.service, k.environment) for k in computed} == set(expected)
    for kpis in computed:
        want = expected[(kpis.service, kpis.environment)]
        for name, value in want.items():
            got = getattr(kpis, name)
            if value is None:
                assert got is None, name
            else:
                assert got == pytest.approx(value, rel=1e-9, abs=1e-6), name


@pytest.mark.parametrize("days", [7, 30, 90])
def test_kpis_on_10000_deployments_match_a_direct_calculation(history: tuple, days: int) -> None:
    store, rows = history
    since = UNTIL - days * DAY
    computed = compute_kpis_sync(store.engine, since=since, until=UNTIL)
    assert len(computed) == 8
    assert_matches(computed, direct(rows, since, UNTIL))


def test_kpis_filter_by_service_and_environment(history: tuple) -> None:
    store, rows = history
    since = UNTIL - 30 * DAY
    computed = compute_kpis_sync(
        store.engine, since=since, until=UNTIL, service="api", environment="prod"
    )
    expected = direct(rows, since, UNTIL)
    assert_matches(computed, {("api", "prod"): expected[("api", "prod")]})


def test_derived_rates_follow_their_definitions(history: tuple) -> None:
    store, _ = history
    kpis = compute_kpis_sync(store.engine, since=UNTIL - 28 * DAY, until=UNTIL)[0]
    assert kpis.deploys_per_week == pytest.approx(kpis.deploys_succeeded / 4)
    assert kpis.success_rate == pytest.approx(kpis.succeeded / kpis.deployments)
    assert kpis.change_failure_rate == pytest.approx(
        (kpis.deploys_failed + kpis.reverted_by_hand) / kpis.deploys
    )


def test_a_configured_service_without_deployments_shows_zeros_and_unjudged_targets(
    history: tuple,
) -> None:
    store, _ = history
    [quiet] = compute_kpis_sync(
        store.engine, since=UNTIL - DAY, until=UNTIL, service="cron", groups=[("cron", "prod")]
    )
    assert (quiet.deployments, quiet.success_rate, quiet.duration_p95) == (0, None, None)
    verdicts = {c.name: c.met for c in quiet.checks}
    assert verdicts["success rate"] is None
    assert verdicts["deploy frequency"] is False


def test_downtime_is_not_measured_without_router_rollups(history: tuple) -> None:
    store, _ = history
    kpis = compute_kpis_sync(store.engine, since=UNTIL - 7 * DAY, until=UNTIL)
    assert all(k.downtime_seconds is None for k in kpis)
    assert all(c.met is None for k in kpis for c in k.checks if c.name == "downtime")


def test_downtime_sums_zero_healthy_seconds_of_the_route_in_the_period(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'history.db'}")
    generate_history(store.engine, 50, until=UNTIL, days=1)
    minutes = sa.table(
        "metric_minutes",
        *(sa.column(c) for c in ("minute", "service", "revision", "zero_healthy_seconds")),
        *(sa.column(c) for c in ("requests", "responses_2xx", "responses_3xx", "responses_4xx")),
        *(sa.column(c) for c in ("responses_5xx", "upstream_errors", "histogram")),
    )
    zeros = dict.fromkeys(
        ("requests", "responses_2xx", "responses_3xx", "responses_4xx", "responses_5xx"), 0
    )
    rows = [
        ("api.prod", "", UNTIL - 600, 3.0),
        ("api.prod", "", UNTIL - 60, 4.5),
        ("api.prod", "abc", UNTIL - 60, 50.0),  # per-revision rows carry no health numbers
        ("api.prod", "", UNTIL - 3 * DAY, 100.0),  # before the period
        ("web.prod", "", UNTIL - 60, 7.0),
    ]
    with store.engine.begin() as conn:
        conn.execute(
            minutes.insert(),
            [
                {
                    "service": service,
                    "revision": revision,
                    "minute": minute,
                    "zero_healthy_seconds": down,
                    "upstream_errors": 0,
                    "histogram": "{}",
                    **zeros,
                }
                for service, revision, minute, down in rows
            ],
        )
    [kpis] = compute_kpis_sync(
        store.engine, since=UNTIL - DAY, until=UNTIL, service="api", environment="prod"
    )
    assert kpis.downtime_seconds == pytest.approx(7.5)
    assert [c.met for c in kpis.checks if c.name == "downtime"] == [False]
    store.engine.dispose()


def test_target_checks_judge_the_seeds_goals() -> None:
    good = ServiceKpis(
        "api",
        "prod",
        since=UNTIL - 7 * DAY,
        until=UNTIL,
        deployments=20,
        succeeded=20,
        deploys=20,
        deploys_succeeded=20,
        duration_p95=600.0,
        rollback_seconds_max=120.0,
        downtime_seconds=0.0,
    )
    assert all(c.met for c in check_targets(good, Targets()))


def insert(store: SqlHistoryStore, deployments: list[dict], events: list[tuple] = ()) -> None:
    """Deployments (id, service, environment, state, created_at, finished_at[, kind]) and events
    (deployment id, kind, at) straight into the history tables."""
    table = sa.table(
        "deployments",
        *(sa.column(c) for c in ("id", "service", "environment", "revision", "strategy", "state")),
        *(sa.column(c) for c in ("actor", "created_at", "kind", "started_at", "finished_at")),
        sa.column("labels"),
    )
    rows = [
        {
            "revision": d["id"][:12],
            "strategy": "rolling",
            "actor": "test",
            "kind": "deploy",
            "started_at": d["created_at"],
            "labels": "{}",
            **d,
        }
        for d in deployments
    ]
    event_table = sa.table(
        "events", *(sa.column(n) for n in ("deployment_id", "seq", "at", "kind", "message", "data"))
    )
    with store.engine.begin() as conn:
        conn.execute(table.insert(), rows)
        for seq, (deployment_id, kind, at) in enumerate(events, start=1):
            conn.execute(
                event_table.insert(),
                [
                    {
                        "deployment_id": deployment_id,
                        "seq": seq,
                        "at": at,
                        "kind": kind,
                        "message": kind,
                        "data": "{}",
                    }
                ],
            )


def deployment(ident: str, state: str, at: float, seconds: float, **more: object) -> dict:
    return {
        "id": ident.ljust(32, "0"),
        "service": "api",
        "environment": "prod",
        "state": state,
        "created_at": at,
        "finished_at": at + seconds,
        **more,
    }


@pytest.fixture
def empty_store(tmp_path: Path) -> Iterator[SqlHistoryStore]:
    store = open_store(f"sqlite:///{tmp_path / 'history.db'}")
    yield store
    store.engine.dispose()


def test_a_rolled_back_deploy_is_restored_by_its_own_rollback(empty_store: SqlHistoryStore) -> None:
    """v2 succeeded, v3 rolled back to v2 (the fleet serves v2, healthy): restored at the end of
    the rollback, not "not restored yet" until some later deploy succeeds."""
    insert(
        empty_store,
        [
            deployment("a1", "succeeded", UNTIL - 3600, 60),
            deployment("b2", "rolled_back", UNTIL - 1800, 90),
        ],
        [("b2".ljust(32, "0"), "instance_starting", UNTIL - 1790)],
    )
    [kpis] = compute_kpis_sync(empty_store.engine, since=UNTIL - DAY, until=UNTIL)
    assert kpis.unrestored == 0
    assert kpis.time_to_restore_max == pytest.approx(90)


def test_a_failed_deploy_that_changed_nothing_is_restored_when_it_ends(
    empty_store: SqlHistoryStore,
) -> None:
    """A deploy that failed before starting any instance (the old fleet kept serving) is not
    unrestored; one that left the fleet changed (auto_rollback off) is, until a success."""
    untouched = deployment("c3", "failed", UNTIL - 1800, 20)
    changed = deployment("d4", "failed", UNTIL - 900, 40)
    insert(
        empty_store,
        [deployment("a1", "succeeded", UNTIL - 3600, 60), untouched, changed],
        [(changed["id"], "instance_starting", UNTIL - 890)],
    )
    [kpis] = compute_kpis_sync(empty_store.engine, since=UNTIL - DAY, until=UNTIL)
    assert (kpis.deploys_failed, kpis.unrestored) == (2, 1)
    assert kpis.time_to_restore_max == pytest.approx(20)

    insert(empty_store, [deployment("e5", "succeeded", UNTIL - 600, 30)])
    [kpis] = compute_kpis_sync(empty_store.engine, since=UNTIL - DAY, until=UNTIL)
    assert kpis.unrestored == 0
    assert kpis.time_to_restore_max == pytest.approx(UNTIL - 570 - (UNTIL - 900))


def test_only_the_configured_environments_and_services_are_listed(
    empty_store: SqlHistoryStore,
) -> None:
    """History of an environment (and a service) removed from zerodown.yml stays in the store,
    but the KPIs list only what the config defines."""
    insert(
        empty_store,
        [
            deployment("a1", "succeeded", UNTIL - 3600, 60),
            deployment("b2", "succeeded", UNTIL - 3000, 60, environment="canary"),
            deployment("c3", "succeeded", UNTIL - 2000, 60, service="old"),
        ],
    )
    configured = [("api", "prod"), ("api", "dev")]
    found = compute_kpis_sync(empty_store.engine, since=UNTIL - DAY, until=UNTIL, groups=configured)
    assert [(k.service, k.environment, k.deployments) for k in found] == [
        ("api", "dev", 0),
        ("api", "prod", 1),
    ]
    everything = compute_kpis_sync(empty_store.engine, since=UNTIL - DAY, until=UNTIL)
    assert len(everything) == 3  # without a config, all the history


def test_downtime_counts_only_after_the_route_first_had_a_healthy_target(
    empty_store: SqlHistoryStore,
) -> None:
    """The router's measurement through the per-minute rollup into the KPI: the first deploy's
    0.6 s before its first instance is healthy is no downtime; a later 2 s with none healthy is."""
    now = [UNTIL - 600.0]
    table = RoutingTable()
    recorder = MetricsRecorder(table, now=lambda: now[0])

    def at(seconds: float, change: Callable[[], object]) -> None:
        now[0] = UNTIL - 600.0 + seconds
        change()
        recorder.on_table_change()  # what the router daemon does on every table change

    spec = TargetSpec("api.prod", "i1", "127.0.0.1", 1, revision="r1")
    at(0.0, lambda: table.apply_route(RouteSpec("api.prod")))
    at(0.1, lambda: table.add_target(spec, healthy=False))
    at(0.6, lambda: table.set_health("api.prod", "i1", TargetHealth.HEALTHY))
    at(30.0, lambda: table.set_health("api.prod", "i1", TargetHealth.UNHEALTHY))
    at(32.0, lambda: table.set_health("api.prod", "i1", TargetHealth.HEALTHY))
    now[0] = UNTIL - 400.0

    class Router:
        name = "builtin"

        async def metrics(self, since: float | None = None) -> dict:
            return recorder.snapshot(since)

    collector = MetricsCollector(
        metrics_source(Router()), empty_store, clock=FakeClock(unix_start=now[0])
    )
    assert asyncio.run(collector.collect()) > 0
    [kpis] = compute_kpis_sync(
        empty_store.engine, since=UNTIL - DAY, until=UNTIL, groups=[("api", "prod")]
    )
    assert kpis.downtime_seconds == pytest.approx(2.0)
