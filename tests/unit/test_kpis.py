"""KPIs from SQL aggregates match a direct Python calculation on 10,000 generated deployments."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from benchmarks.kpi_bench import GeneratedDeployment, generate_history

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


def direct(rows: list[GeneratedDeployment], since: float, until: float) -> dict[tuple, dict]:
    """The KPI definitions of zerodown.server.kpis, one record at a time."""
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
            later = [s for s in group if s.state == "succeeded" and s.created_at > f.created_at]
            if later:
                ttrs.append(later[0].finished_at - (f.started_at or f.created_at))
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
