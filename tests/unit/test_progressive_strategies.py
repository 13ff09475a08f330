"""Blue/green and canary on the engine's fakes: steps, analysis verdicts, commands, warm flips."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from tests.unit.fakes import FakeRouter, Harness, make_loaded

from zerodown.domain.events import DeploymentState, EventKind
from zerodown.engine.analysis import RevisionStats
from zerodown.engine.commands import Command, send_command, take_commands
from zerodown.engine.strategies.blue_green import WARM, WARM_UNTIL, WarmRecords, reap_expired_blue
from zerodown.errors import RouterError, StoreError
from zerodown.routers.base import TargetHealth, TargetSpec
from zerodown.store.sql import SqlHistoryStore, open_store

FAST_ANALYSIS = {"interval": 0.02, "min_requests": 10, "inconclusive_limit": 0.3}


class WeightedFakeRouter(FakeRouter):
    """The engine's fake router (pools, pool weights, the preview pool); like the real table,
    an update of an existing target keeps its health unless `healthy`. `share_log` holds the
    revisions' shares of live traffic after every change."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.share_log: list[dict[str, float]] = []

    async def add_target(self, target: TargetSpec, *, healthy: bool = False) -> None:
        before = self.targets.get(target.service, {}).get(target.target_id)
        await super().add_target(target, healthy=healthy)
        if before is not None and not healthy:
            self.targets[target.service][target.target_id].health = before.health

    def _log(self, service: str) -> None:
        super()._log(service)
        self.share_log.append(self.shares(service))

    def splits(self) -> list[dict[str, float]]:
        """The distinct shares of live traffic, in order (repeats of one split collapsed)."""
        found: list[dict[str, float]] = []
        for shares in self.share_log:
            if not found or found[-1] != shares:
                found.append(shares)
        return found


class FakeMetrics:
    """Per-revision stats a test sets; records every window asked for."""

    def __init__(self) -> None:
        self.stats: dict[str, RevisionStats] = {}
        self.asked = 0

    async def revision_stats(
        self, route: str, revisions: Sequence[str], *, since: float
    ) -> dict[str, RevisionStats]:
        self.asked += 1
        return {r: self.stats.get(r, RevisionStats(r)) for r in revisions}


def _harness(
    tmp_path: Path, strategy: dict[str, Any], *, instances: int = 2, sql: bool = False
) -> tuple[Harness, FakeMetrics]:
    harness = Harness(make_loaded(tmp_path, instances=instances, strategy=strategy))
    harness.router = WeightedFakeRouter(journal=harness.journal)
    metrics = FakeMetrics()
    if sql:
        harness.store = open_store(f"sqlite:///{tmp_path / 'history.db'}")  # type: ignore[assignment]
    harness.deployer = harness.make_deployer(harness.loaded, metrics=metrics)
    return harness, metrics


async def _on_v1(harness: Harness) -> None:
    record = await harness.deploy("v1")
    assert record.state is DeploymentState.SUCCEEDED, record.reason
    harness.journal.clear()


def _events(harness: Harness, record_id: str, kind: EventKind) -> list[dict[str, Any]]:
    return [e.data for e in harness.store.event_log[record_id] if e.kind is kind]


def _healthy(metrics: FakeMetrics, *, canary_p95: float = 40.0, canary_errors: int = 0) -> None:
    metrics.stats = {
        "v1": RevisionStats("v1", 500, 0, 40.0),
        "v2": RevisionStats("v2", 100, canary_errors, canary_p95),
    }


CANARY = {
    "type": "canary",
    "steps": [{"weight": 10, "pause": 0.05}, {"weight": 50, "pause": 0.05}],
    "analysis": FAST_ANALYSIS,
}


async def test_canary_walks_its_steps_with_analysis_and_ends_on_the_new_revision(
    tmp_path: Path,
) -> None:
    """10 % then 50 % with passing analyses, then 100 %: v2 everywhere, v1 retired."""
    harness, metrics = _harness(tmp_path, CANARY)
    await _on_v1(harness)
    _healthy(metrics)
    record = await harness.deploy("v2")
    assert record.state is DeploymentState.SUCCEEDED, record.reason
    steps = [d["weight"] for d in _events(harness, record.id, EventKind.STEP)]
    assert steps == [10, 50, 100]
    verdicts = {d["verdict"] for d in _events(harness, record.id, EventKind.ANALYSIS)}
    assert verdicts == {"pass"}
    assert harness.serving_revisions() == ["v2", "v2"]
    assert harness.running_revisions() == ["v2", "v2"]


async def test_canary_step_splits_weight_between_canary_and_baseline(tmp_path: Path) -> None:
    """At 10 % with 1 canary and 2 baseline instances, the pools split 10 : 90."""
    harness, metrics = _harness(tmp_path, {**CANARY, "steps": [{"weight": 10, "pause": 5}]})
    await _on_v1(harness)
    _healthy(metrics)
    task = asyncio.ensure_future(harness.deploy("v2"))
    for _ in range(500):
        if metrics.asked:
            break
        await asyncio.sleep(0.01)
    router: WeightedFakeRouter = harness.router  # type: ignore[assignment]
    shares = router.shares()
    harness.deployer.abort()
    await task
    assert shares == {"v2": 10.0, "v1": 90.0}


async def test_every_canary_step_is_one_change_of_the_split(tmp_path: Path) -> None:
    """The router sees only the steps' splits, each in one change: 100 % v1, 10 : 90, 50 : 50,
    100 % v2; never a moment of no live traffic (an empty split) or of a share in between."""
    harness, metrics = _harness(tmp_path, CANARY)
    await _on_v1(harness)
    router: WeightedFakeRouter = harness.router  # type: ignore[assignment]
    router.share_log.clear()
    _healthy(metrics)
    record = await harness.deploy("v2")
    assert record.state is DeploymentState.SUCCEEDED, record.reason
    assert router.splits() == [
        {"v1": 100.0},
        {"v1": 90.0, "v2": 10.0},
        {"v1": 50.0, "v2": 50.0},
        {"v2": 100.0},
    ]
    steps = [k for k, _ in harness.ops("pool_weights")]
    assert len(steps) == 3  # 10 %, 50 %, 100 %: the router is asked once per step


async def test_canary_with_5xx_fails_analysis_and_rolls_back_to_the_baseline(
    tmp_path: Path,
) -> None:
    """20 % 5xx on the canary: analysis fails, weight back on v1, canary stopped, rolled back."""
    harness, metrics = _harness(tmp_path, CANARY)
    await _on_v1(harness)
    _healthy(metrics, canary_errors=20)
    record = await harness.deploy("v2")
    assert record.state is DeploymentState.ROLLED_BACK
    assert record.reason is not None and "canary analysis failed" in record.reason
    assert _events(harness, record.id, EventKind.ANALYSIS)[-1]["verdict"] == "fail"
    assert harness.serving_revisions() == ["v1", "v1"]
    assert harness.running_revisions() == ["v1", "v1"]


async def test_slow_canary_fails_on_p95_latency(tmp_path: Path) -> None:
    """p95 three times the baseline's fails the analysis."""
    harness, metrics = _harness(tmp_path, CANARY)
    await _on_v1(harness)
    _healthy(metrics, canary_p95=120.0)
    record = await harness.deploy("v2")
    assert record.state is DeploymentState.ROLLED_BACK
    failed = _events(harness, record.id, EventKind.ANALYSIS)[-1]
    assert [c["ok"] for c in failed["checks"]] == [True, False]


async def test_low_traffic_canary_is_held_inconclusive_and_never_promoted(tmp_path: Path) -> None:
    """3 requests on the canary: every analysis inconclusive, the step holds, then fails at the
    limit; the weight never went past the first step."""
    harness, metrics = _harness(tmp_path, CANARY)
    await _on_v1(harness)
    metrics.stats = {"v1": RevisionStats("v1", 500, 0, 40.0), "v2": RevisionStats("v2", 3, 0, 40)}
    record = await harness.deploy("v2")
    assert record.state is DeploymentState.ROLLED_BACK
    analyses = _events(harness, record.id, EventKind.ANALYSIS)
    assert len(analyses) > 1 and {a["verdict"] for a in analyses} == {"inconclusive"}
    assert "served 3 of the 10 requests needed" in analyses[0]["missing"][0]
    assert [d["weight"] for d in _events(harness, record.id, EventKind.STEP)] == [10]


async def test_a_step_without_pause_waits_for_promote_full(tmp_path: Path) -> None:
    """A pause without duration holds until `promote --full` arrives through the store."""
    strategy = {**CANARY, "steps": [{"weight": 20}, {"weight": 60, "pause": 60}]}
    strategy["analysis"] = {**FAST_ANALYSIS, "inconclusive_limit": 60}
    harness, metrics = _harness(tmp_path, strategy, sql=True)
    try:
        await _on_v1(harness)
        _healthy(metrics)
        task = asyncio.ensure_future(harness.deploy("v2"))
        for _ in range(500):
            if metrics.asked >= 3:
                break
            await asyncio.sleep(0.01)
        assert not task.done()
        running = await harness.store.unfinished()
        await send_command(harness.store, running[0].id, Command.PROMOTE_FULL, "tester")
        record = await asyncio.wait_for(task, 10)
        assert record.state is DeploymentState.SUCCEEDED, record.reason
        steps = await harness.store.events(record.id)
        weights = [e.data.get("weight") for _, e in steps if e.kind is EventKind.STEP]
        assert 60 not in weights and weights[-1] == 100
    finally:
        await harness.store.close()


async def test_commands_are_taken_once_in_order(tmp_path: Path) -> None:
    """pause then resume are returned once, oldest first; a second take is empty."""
    harness, _ = _harness(tmp_path, CANARY, sql=True)
    store: SqlHistoryStore = harness.store  # type: ignore[assignment]
    try:
        record = await harness.deploy("v1")
        await send_command(store, record.id, "pause", "a")
        await send_command(store, record.id, "resume", "b")
        taken = await take_commands(store, record.id)
        assert [(c.command, c.actor) for c in taken] == [
            (Command.PAUSE, "a"),
            (Command.RESUME, "b"),
        ]
        assert await take_commands(store, record.id) == []
        with pytest.raises(StoreError):
            await send_command(store, "no-such-deployment", "promote", "a")
    finally:
        await store.close()


BLUE_GREEN = {"type": "blue-green", "rollback_window": 600}


async def test_blue_green_switches_in_one_step_and_keeps_blue_warm(tmp_path: Path) -> None:
    """Green is admitted to the preview pool, one pool change switches all live traffic (no
    split in between), blue stays in the router with its pool at 0; the window is recorded in
    the history, not in the router."""
    harness, _ = _harness(tmp_path, BLUE_GREEN)
    await _on_v1(harness)
    router: WeightedFakeRouter = harness.router  # type: ignore[assignment]
    router.share_log.clear()
    record = await harness.deploy("v2")
    assert record.state is DeploymentState.SUCCEEDED, record.reason
    assert router.splits() == [{"v1": 100.0}, {"v2": 100.0}]
    assert harness.serving_revisions() == ["v2", "v2"]
    assert harness.running_revisions() == ["v1", "v1", "v2", "v2"]
    route = (await router.status("api.prod"))[0]
    blue = [t for t in route.targets if t.spec.revision == "v1"]
    assert len(blue) == 2 and {route.pool_weight(t.spec.pool) for t in blue} == {0}
    warm = [d for d in _events(harness, record.id, EventKind.DECISION) if WARM_UNTIL in d]
    assert sorted(warm[0][WARM]) == sorted(t.spec.target_id for t in blue)


async def test_blue_green_rollback_inside_the_window_is_a_flip(tmp_path: Path) -> None:
    """`rollback` while blue is warm starts nothing: one weight flip puts v1 back."""
    harness, _ = _harness(tmp_path, BLUE_GREEN)
    await _on_v1(harness)
    await harness.deploy("v2")
    harness.journal.clear()
    record = await harness.deployer.rollback("api", "prod", actor="test")
    assert record.state is DeploymentState.SUCCEEDED, record.reason
    assert harness.ops("start") == []
    assert harness.serving_revisions() == ["v1", "v1"]


async def test_blue_green_failure_after_the_switch_flips_back(tmp_path: Path) -> None:
    """The router failing right after it applied the switch (the answer lost) fails the deploy;
    the rollback flips traffic back to warm blue without starting an instance."""
    harness, _ = _harness(tmp_path, BLUE_GREEN)
    await _on_v1(harness)
    router: WeightedFakeRouter = harness.router  # type: ignore[assignment]
    switch = router.set_pool_weights

    async def switch_then_break(service: str, weights: Mapping[str, int]) -> None:
        await switch(service, weights)
        if any(pool.startswith("v2") and w > 0 for pool, w in weights.items()):  # the switch
            router.set_pool_weights = switch  # type: ignore[method-assign]
            raise RouterError("the router closed the connection during set_pool_weights")

    router.set_pool_weights = switch_then_break  # type: ignore[method-assign]
    record = await harness.deploy("v2")
    assert record.state is DeploymentState.ROLLED_BACK, record.reason
    assert [k for k, _ in harness.ops("start")] == ["start", "start"]  # green only
    assert harness.serving_revisions() == ["v1", "v1"]
    assert harness.running_revisions() == ["v1", "v1"]


async def test_expired_blue_is_reaped_after_its_window(tmp_path: Path) -> None:
    """reap_expired_blue drains and stops blue once its recorded window has passed, not before."""
    harness, _ = _harness(tmp_path, BLUE_GREEN)
    await _on_v1(harness)
    await harness.deploy("v2")
    now = harness.deployer.clock.time()
    records = WarmRecords(harness.store)
    assert await reap_expired_blue(harness.router, harness.runtime, records, now=now) == []
    reaped = await reap_expired_blue(harness.router, harness.runtime, records, now=now + 601)
    assert len(reaped) == 2
    assert harness.running_revisions() == ["v2", "v2"]
    assert harness.serving_revisions() == ["v2", "v2"]
    router: WeightedFakeRouter = harness.router  # type: ignore[assignment]
    assert {t.health for t in router.targets["api.prod"].values()} == {TargetHealth.HEALTHY}
