"""The benchmarks over both router backends (issue 11): the zerodown.yml each stack writes, the
deploy overhead and rollback figures side by side, and the zerodown-managed HAProxy row."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from benchmarks.deploy_bench import (
    BUILTIN,
    HAPROXY,
    HAPROXY_CHECK_INTERVAL,
    OverheadRun,
    RouterDeployFigures,
    Stack,
    judge_deploy,
    overhead_table,
)
from benchmarks.machine import MachineFacts
from benchmarks.report import HeyResult, WrkResult
from benchmarks.rollback_bench import (
    RollbackRun,
    _configure,
    judge_rollbacks,
    summary_row,
    window_limit,
)
from benchmarks.router_bench import (
    DIRECT,
    HAPROXY_1,
    HAPROXY_DEFAULT,
    HAPROXY_MANAGED,
    HAPROXY_RELOADED,
    HAPROXY_RETRY,
    ZERODOWN,
    PathFigures,
    RouterFigures,
    both,
    build_section,
    haproxy_config,
    judge_managed,
    managed_config,
    server_connections,
)

from zerodown.config.loader import load_config
from zerodown.config.router import BuiltinRouterConfig, HaproxyRouterConfig

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
MACHINE = MachineFacts("AMD EPYC", 2, 23.5, "Linux 6.1", "Debian 12", "CPython 3.11", {})


# -- the stacks' zerodown.yml ------------------------------------------------------------------


def test_a_haproxy_stack_writes_a_config_that_selects_haproxy_on_its_own_port(
    tmp_path: Path,
) -> None:
    """Same app, strategy and instances; only `router:` differs between the two stacks."""
    haproxy = Stack(tmp_path / "h", 18080, HAPROXY)
    builtin = Stack(tmp_path / "b", 18081, BUILTIN)
    for s in (haproxy, builtin):
        s.root.mkdir()
    h = haproxy.config(instances=4, strategy="rolling", env={"BOOT_SECONDS": "2"}).config
    b = builtin.config(instances=4, strategy="rolling", env={"BOOT_SECONDS": "2"}).config
    assert isinstance(h.router, HaproxyRouterConfig) and h.router.listen == ("127.0.0.1:18080",)
    assert isinstance(b.router, BuiltinRouterConfig) and b.router.listen == ("127.0.0.1:18081",)
    assert h.services == b.services
    assert h.environments["prod"].strategy == b.environments["prod"].strategy


def test_the_rollback_bench_config_keeps_the_stacks_router(tmp_path: Path) -> None:
    """The rollback bench's own zerodown.yml (canary) also runs behind the stack's router."""
    loaded = _configure(Stack(tmp_path, 18082, HAPROXY), "canary")
    assert isinstance(loaded.config.router, HaproxyRouterConfig)
    assert loaded.config.environments["prod"].strategy.type == "canary"


def test_the_managed_haproxy_config_is_a_deploys_route_with_health_checks_and_leastconn(
    tmp_path: Path,
) -> None:
    """What the managed row measures: HAProxy selected by name, least_inflight (leastconn) and
    the fastapi health check on /health, which the fleet turns into the route's checks."""
    path = tmp_path / "zerodown.yml"
    path.write_text(yaml.safe_dump(managed_config(18083)))
    config = load_config(path, environ={}).config
    assert isinstance(config.router, HaproxyRouterConfig)
    assert config.router.balance == "least_inflight"
    health = config.services["bench"].health.to_spec()
    assert (health.path, health.interval, health.start_interval) == ("/health", 5.0, 0.1)


# -- deploy overhead side by side --------------------------------------------------------------


def figures(router: str, walls: list[float], boot: float = 2.0) -> RouterDeployFigures:
    return RouterDeployFigures(router, tuple(OverheadRun(w, boot) for w in walls), 0.5, 0.25)


def test_overhead_run_ratio_and_cost_per_batch() -> None:
    run = OverheadRun(wall=9.2, boot=2.0)  # 4 batches
    assert run.ratio == pytest.approx(9.2 / 8)
    assert run.per_batch == pytest.approx(0.3)


def test_the_median_run_is_taken_by_ratio() -> None:
    assert figures("x", [9.6, 8.8, 9.2]).median.wall == 9.2


def test_overhead_table_has_one_column_per_router_and_the_extra_cost_per_batch() -> None:
    table = overhead_table([figures(BUILTIN.label, [9.2]), figures(HAPROXY.label, [9.6])])
    assert table.headers == ("figure", "built-in router", "HAProxy")
    rows = {row[0]: row[1:] for row in table.rows}
    assert rows["wall / (4 x B), median of 1 run(s)"] == ("1.150", "1.200")
    assert rows["overhead per batch (wall / batches - B)"] == ("0.30 s", "0.40 s")
    assert rows["overhead per batch above the built-in router's"] == ("—", "+0.10 s")
    assert rows["first failed health check -> fleet on v1"] == ("0.50 s", "0.50 s")
    text = table.render()
    assert "| rolling deploy of 4 instances, batch 1 | 9.20 s | 9.60 s |" in text


@pytest.mark.parametrize(
    ("haproxy_wall", "failed", "met"),
    [
        (8.4 + 4 * HAPROXY_CHECK_INTERVAL, 0, True),  # exactly one check interval per batch more
        (8.4 + 4 * HAPROXY_CHECK_INTERVAL + 0.2, 0, False),  # more than that
        (8.4, 3, False),  # a failed request behind HAProxy
    ],
)
def test_deploy_goal_allows_haproxy_one_check_interval_per_batch_more(
    haproxy_wall: float, failed: int, met: bool
) -> None:
    builtin, haproxy = figures(BUILTIN.label, [8.4]), figures(HAPROXY.label, [haproxy_wall])
    verdict, measured = judge_deploy({BUILTIN.label: 0, HAPROXY.label: failed}, [builtin, haproxy])
    assert verdict is met
    assert measured.startswith("built-in router: 0 failed, ratio 1.050; HAProxy: ")
    assert f"{failed} failed" in measured and "s per batch" in measured


def test_deploy_goal_is_not_met_when_a_router_is_above_the_overhead_ratio() -> None:
    slow = [figures(BUILTIN.label, [9.5]), figures(HAPROXY.label, [9.5])]  # 1.19 both
    assert judge_deploy({BUILTIN.label: 0, HAPROXY.label: 0}, slow)[0] is False


# -- rollback side by side ---------------------------------------------------------------------


def test_rollback_rows_name_strategy_and_router_and_summarise_the_runs() -> None:
    runs = [RollbackRun(0.4, 10, 800, 5.0), RollbackRun(0.6, 20, 800, 5.0)]
    assert summary_row("canary", "HAProxy", runs) == (
        "canary", "HAProxy", "2", "0.50 s", "0.60 s", "15", "1.88 %",
    )  # fmt: skip


def test_rollback_goal_judges_every_strategy_behind_every_router() -> None:
    fast = [RollbackRun(0.5, 10, 800, 5.0)]
    results = {
        ("canary", "built-in router"): fast,
        ("canary", "HAProxy"): fast,
        ("rolling", "built-in router"): fast,
        ("rolling", "HAProxy"): [RollbackRun(11.5, 10, 800, 5.0)],  # B + 10 s allowed
    }
    met, measured = judge_rollbacks(results)
    assert met is True
    assert measured == (
        "built-in router: canary 0.50 s, rolling 0.50 s; HAProxy: canary 0.50 s, rolling 11.50 s"
    )
    results[("canary", "HAProxy")] = [RollbackRun(10.5, 10, 800, 5.0)]
    assert judge_rollbacks(results)[0] is False
    assert window_limit("blue-green") == 10.0 and window_limit("rolling") == 12.0


# -- the managed HAProxy row -------------------------------------------------------------------


def router_figures(managed_rps: float, managed_p99: float, errors: int = 0) -> RouterFigures:
    def path(name: str, rps: float, p99: float, cpu: float | None, bad: int = 0) -> PathFigures:
        wrk = WrkResult(int(rps * 10), 10.0, rps, 0.001, 0.004, 0, bad)
        hey = HeyResult(1000.0, 0.0005, p99, {200: 10000})
        return PathFigures(name, wrk, hey, cpu, 0.5)

    paths = [
        path(DIRECT, 40000, 0.0010, None),
        path(ZERODOWN, 12000, 0.0020, 1.0),
        path(HAPROXY_1, 20000, 0.0015, 0.6),
        path(HAPROXY_DEFAULT, 20000, 0.0015, 0.7),  # added p99 0.5 ms
        path(HAPROXY_MANAGED, managed_rps, managed_p99, 0.8, errors),
    ]
    return RouterFigures({p.name: p for p in paths}, [], [], 10)


@pytest.mark.parametrize(
    ("rps", "p99", "errors", "met"),
    [
        (18000, 0.0016, 0, True),  # 0.90x, +0.1 ms added p99 (hey's resolution)
        (17800, 0.0015, 0, False),  # 0.89x
        (19000, 0.0017, 0, False),  # added p99 0.7 ms against 0.5 ms
        (19000, 0.0015, 1, False),  # an error
    ],
)
def test_managed_haproxy_goal_is_within_10_percent_of_the_hand_configured_one(
    rps: float, p99: float, errors: int, met: bool
) -> None:
    verdict, measured = judge_managed(router_figures(rps, p99, errors))
    assert verdict is met
    assert measured.startswith(f"{rps / 20000:.2f}x the throughput, added p99 ")
    assert "against 0.50 ms" in measured


def test_router_section_shows_the_managed_row_its_goal_and_how_it_differs() -> None:
    section = build_section(router_figures(18000, 0.0016), MACHINE, NOW, quick=True, load=0.1)
    assert section.met is True  # zerodown 0.60x and 1.0 ms added; managed within 10 %
    assert "zerodown-managed HAProxy within 10 %" in section.goal
    assert "0.90x the throughput, added p99 0.60 ms against 0.50 ms, 0 errors" in section.goal
    text = section.render()
    assert f"| {HAPROXY_MANAGED} | 18,000 |" in text  # the throughput table
    assert f"| {HAPROXY_MANAGED} | 1,000 | 0.50 ms | 1.60 ms | 0.60 ms | 0 |" in text
    assert "**zerodown-managed HAProxy** (0.90x" in text
    assert "option httpchk" in text and "leastconn" in text and "add server" in text
    assert "exactly as a deploy does" in text  # the method says how it was set up


def test_a_managed_haproxy_that_misses_makes_the_router_goal_not_met() -> None:
    section = build_section(router_figures(15000, 0.0016), MACHINE, NOW, quick=True, load=0.1)
    assert section.met is False


@pytest.mark.parametrize(
    ("first", "second", "combined"),
    [(True, True, True), (True, False, False), (None, False, False), (True, None, None)],
)
def test_two_verdicts_combine_not_met_first_then_unjudged(
    first: bool | None, second: bool | None, combined: bool | None
) -> None:
    assert both(first, second) is combined


def test_the_managed_note_says_what_a_reload_to_static_servers_bought() -> None:
    """The reloaded row of the same HAProxy: 2x after the reload names `add server` servers
    as the cost; about the same names them as not the cause."""
    base = router_figures(10000, 0.0016)

    def with_reloaded(rps: float) -> RouterFigures:
        managed = base.paths[HAPROXY_MANAGED]
        wrk = WrkResult(int(rps * 10), 10.0, rps, 0.001, 0.004, 0, 0)
        reloaded = PathFigures(HAPROXY_RELOADED, wrk, managed.hey, 0.8, 0.5)
        return RouterFigures({**base.paths, HAPROXY_RELOADED: reloaded}, [], [], 10)

    text = build_section(with_reloaded(20000), MACHINE, NOW, quick=True, load=0.1).render()
    assert "20,000 req/s against 10,000 before (2.00x; 1.00x the hand-configured one)" in text
    assert "most of the gap is what HAProxy's servers added with `add server` cost" in text
    assert f"| {HAPROXY_RELOADED} | 20,000 |" in text
    same = build_section(with_reloaded(10500), MACHINE, NOW, quick=True, load=0.1).render()
    assert "are not what the gap is made of" in same


def test_server_connections_sum_connect_and_reuse_of_the_server_rows() -> None:
    """HAProxy's own counters: frontends and backends are left out, servers summed."""
    stat = (
        "# pxname,svname,stot,type,connect,reuse\n"
        "listen,FRONTEND,900,0,,\n"
        "bench.prod,nginx-0,500,2,3,497\n"
        "bench.prod,nginx-1,400,2,2,398\n"
        "bench.prod,BACKEND,900,1,5,895\n"
    )
    assert server_connections(stat) == (5, 895)


def test_the_hand_configured_haproxy_with_retry_on_differs_by_that_line_only() -> None:
    plain = haproxy_config(8080, 9090, None)
    retry = haproxy_config(8080, 9090, None, "conn-failure empty-response")
    assert retry.replace("    retry-on conn-failure empty-response\n", "") == plain


def test_the_managed_note_names_connections_and_what_the_retry_line_costs() -> None:
    """The L7-retry row of the hand-configured HAProxy: what the line alone costs, and the
    managed HAProxy against that like-for-like configuration; the server connections opened."""
    base = router_figures(16000, 0.0016)
    wrk = WrkResult(170000, 10.0, 17000.0, 0.001, 0.004, 0, 0)
    retry = PathFigures(HAPROXY_RETRY, wrk, base.paths[HAPROXY_DEFAULT].hey, 0.7, 0.5)
    figures = RouterFigures(
        {**base.paths, HAPROXY_RETRY: retry}, [], [], 10, {HAPROXY_MANAGED: (60, 239940)}
    )
    text = build_section(figures, MACHINE, NOW, quick=True, load=0.1).render()
    assert f"| {HAPROXY_RETRY} | 17,000 |" in text
    assert "its servers opened 60 connections for 240,000 requests, 99.98% of them" in text
    assert "That line alone takes the hand-configured HAProxy to 0.85x its requests/s" in text
    assert "41.2 µs of CPU per request against 35.0 µs" in text
    assert "against the hand-configured one with that line, the managed one serves 0.94x" in text
    assert "and zerodown's `retry-on conn-failure empty-response` added" in text  # the method
