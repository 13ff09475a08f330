"""The router benchmark's two-worker row: its ratios and a goal verdict that names who meets it."""

from __future__ import annotations

from datetime import UTC, datetime

from benchmarks.machine import MachineFacts
from benchmarks.processes import ProfileLine
from benchmarks.report import HeyResult, WrkResult
from benchmarks.router_bench import (
    DIRECT,
    HAPROXY_1,
    HAPROXY_DEFAULT,
    ZERODOWN,
    ZERODOWN_POOL,
    PathFigures,
    RouterFigures,
    build_section,
)

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def _figures(one_rps: float, pool_rps: float) -> RouterFigures:
    def path(name: str, rps: float, cpu: float | None) -> PathFigures:
        wrk = WrkResult(int(rps * 10), 10.0, rps, 0.001, 0.004, 0, 0)
        hey = HeyResult(1000.0, 0.0005, 0.0025, {200: 10000})
        return PathFigures(name, wrk, hey, cpu, 0.5, wrk_cpu=0.4)

    paths = [
        path(DIRECT, 40000, None),
        path(ZERODOWN, one_rps, 1.0),
        path(ZERODOWN_POOL, pool_rps, 1.4),
        path(HAPROXY_1, 20000, 0.6),
        path(HAPROXY_DEFAULT, 25000, 0.7),
    ]
    top = [ProfileLine("zerodown/routers/builtin/proxy.py:1(data_received)", 9, 1.5, 0.1)]
    return RouterFigures({p.name: p for p in paths}, top, top, 10)


def _machine() -> MachineFacts:
    return MachineFacts("AMD EPYC", 2, 23.5, "Linux 6.1", "Debian 12", "CPython 3.11", {})


def test_goal_names_the_two_worker_pool_when_only_it_meets_the_goal() -> None:
    """One worker at 0.45x misses, two at 0.6x meet: the verdict is met and says by whom, and
    the pool's ratio against HAProxy's default threads is shown too."""
    section = build_section(_figures(9000, 12000), _machine(), NOW, quick=True, load=0.1)
    assert section.met is True
    assert "1 worker: 0.45x" in section.goal
    assert "2 workers: 0.60x vs nbthread 1, 0.48x vs default threads" in section.goal
    assert section.goal.endswith("met by: 2 workers)")
    text = section.render()
    assert f"| {ZERODOWN_POOL} | 12,000 |" in text and "| 0.48x |" in text
    assert "served 1.33x one worker's" in text  # the pool note: what the second worker bought


def test_goal_is_not_met_when_neither_configuration_meets_it() -> None:
    """Both below 0.5x: not met, and the verdict says neither."""
    section = build_section(_figures(8000, 9000), _machine(), NOW, quick=True, load=0.1)
    assert section.met is False
    assert section.goal.endswith("met by: neither)")
