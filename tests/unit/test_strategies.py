"""Each strategy's order of operations, checked on the fakes' shared journal and the events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.unit.fakes import Harness, make_loaded

from zerodown.config.model import HOOK_ORDER
from zerodown.domain.events import DeploymentState


async def _fleet_on_v1(
    tmp_path: Path, *, instances: int, strategy: dict[str, Any] | None = None, **kw: Any
) -> Harness:
    harness = Harness(make_loaded(tmp_path, instances=instances, strategy=strategy, **kw))
    first = await harness.deploy("v1")
    assert first.state is DeploymentState.SUCCEEDED
    harness.journal.clear()
    harness.router.serving_log.clear()
    return harness


def _kinds(entries: list[tuple[str, str]]) -> list[str]:
    return [kind for kind, _ in entries]


async def test_rolling_surge_one_instance_starts_and_admits_new_before_draining_old(
    tmp_path: Path,
) -> None:
    """One instance, surge: start v2, admit it, then drain and stop v1; never zero serving."""
    harness = await _fleet_on_v1(tmp_path, instances=1)
    old = harness.router.serving("api.prod")[0].target_id
    record = await harness.deploy("v2")
    assert record.state is DeploymentState.SUCCEEDED
    assert _kinds(harness.ops("start", "admit", "drain", "stop")) == [
        "start",
        "admit",
        "drain",
        "stop",
    ]
    assert ("drain", old) in harness.journal and ("stop", old) in harness.journal
    assert min(harness.router.serving_log) >= 1
    assert harness.serving_revisions() == ["v2"] and harness.running_revisions() == ["v2"]


async def test_rolling_surge_batches_keep_the_whole_fleet_serving(tmp_path: Path) -> None:
    """3 instances, batch 1, surge: 3 batches, and at least 3 targets serve after every change."""
    harness = await _fleet_on_v1(tmp_path, instances=3)
    record = await harness.deploy("v2")
    assert record.state is DeploymentState.SUCCEEDED
    assert min(harness.router.serving_log) >= 3
    assert harness.store.kinds(record.id).count("batch_started") == 3
    assert harness.store.kinds(record.id).count("batch_finished") == 3
    assert harness.serving_revisions() == ["v2"] * 3 and harness.running_revisions() == ["v2"] * 3


async def test_rolling_without_surge_drains_first_and_respects_min_healthy(tmp_path: Path) -> None:
    """4 instances, surge off, min_healthy 50%: batches of 2, old drained before new start."""
    strategy = {"surge": False, "batch": 4, "min_healthy": "50%"}
    harness = await _fleet_on_v1(tmp_path, instances=4, strategy=strategy)
    record = await harness.deploy("v2")
    assert record.state is DeploymentState.SUCCEEDED
    assert _kinds(harness.ops("start", "admit", "drain")) == (
        ["drain", "drain", "start", "start", "admit", "admit"] * 2
    )
    assert min(harness.router.serving_log) >= 2
    assert harness.serving_revisions() == ["v2"] * 4


async def test_all_at_once_stops_everything_before_starting_and_says_so(tmp_path: Path) -> None:
    """all-at-once: every old instance drains and stops before the first new one starts."""
    harness = await _fleet_on_v1(tmp_path, instances=2, strategy={"type": "all-at-once"})
    record = await harness.deploy("v2")
    assert record.state is DeploymentState.SUCCEEDED
    ops = _kinds(harness.ops("start", "drain", "stop", "admit"))
    assert ops[:4] == ["drain", "drain", "stop", "stop"] or sorted(ops[:4]) == [
        "drain",
        "drain",
        "stop",
        "stop",
    ]
    assert ops[4:] == ["start", "start", "admit", "admit"]
    messages = [e.message for e in harness.store.event_log[record.id]]
    assert "all-at-once: requests fail until the new instances are healthy" in messages
    assert harness.serving_revisions() == ["v2", "v2"]


async def test_in_place_runs_codedeploy_hook_order_around_the_builtin_steps(
    tmp_path: Path,
) -> None:
    """in-place: every hook in CodeDeploy's order, each built-in step right after its hook."""
    hooks = {name: "true" for name in HOOK_ORDER}
    harness = await _fleet_on_v1(tmp_path, instances=1, strategy={"type": "in-place"}, hooks=hooks)
    record = await harness.deploy("v2")
    assert record.state is DeploymentState.SUCCEEDED
    steps = {
        "drain_started": "[drain]",
        "instance_stopped": "[stop]",
        "instance_starting": "[start]",
        "instance_healthy": "[health]",
        "traffic_added": "[admit]",
    }
    order: list[str] = []
    for event in harness.store.event_log[record.id]:
        if event.kind.value == "hook_started":
            order.append(event.data["hook"])
        elif event.kind.value in steps:
            order.append(steps[event.kind.value])
    assert order == [
        "BeforeBlockTraffic", "BlockTraffic", "[drain]", "AfterBlockTraffic",
        "ApplicationStop", "[stop]",
        "BeforeInstall", "Install", "AfterInstall",
        "ApplicationStart", "[start]", "[health]", "ValidateService",
        "BeforeAllowTraffic", "AllowTraffic", "[admit]", "AfterAllowTraffic",
    ]  # fmt: skip


async def test_scale_up_starts_the_extra_instances(tmp_path: Path) -> None:
    """1 running, 3 wanted: three v2 start, the one v1 goes."""
    harness = await _fleet_on_v1(tmp_path, instances=1)
    harness.deployer = harness.make_deployer(make_loaded(tmp_path, instances=3))
    record = await harness.deploy("v2")
    assert record.state is DeploymentState.SUCCEEDED
    assert harness.serving_revisions() == ["v2"] * 3 and harness.running_revisions() == ["v2"] * 3


async def test_scale_down_retires_the_extra_instances_at_the_end(tmp_path: Path) -> None:
    """3 running, 1 wanted: one v2 starts; all three v1 go, the extras last."""
    harness = await _fleet_on_v1(tmp_path, instances=3)
    harness.deployer = harness.make_deployer(make_loaded(tmp_path, instances=1))
    record = await harness.deploy("v2")
    assert record.state is DeploymentState.SUCCEEDED
    assert (
        _kinds(harness.ops("start", "admit", "drain"))
        == ["start", "admit", "drain"] + ["drain"] * 2
    )
    assert harness.serving_revisions() == ["v2"] and harness.running_revisions() == ["v2"]


async def test_first_deploy_starts_every_instance_in_one_batch(tmp_path: Path) -> None:
    """Nothing runs yet, so there is no traffic to protect: 3 instances boot in one batch."""
    harness = Harness(make_loaded(tmp_path, instances=3))
    record = await harness.deploy("v1")
    assert record.state is DeploymentState.SUCCEEDED
    assert harness.store.kinds(record.id).count("batch_started") == 1
    assert _kinds(harness.ops("start", "admit")) == ["start"] * 3 + ["admit"] * 3
    assert harness.serving_revisions() == ["v1"] * 3


async def test_rolling_surge_batches_finish_before_the_next_starts_in_the_history(
    tmp_path: Path,
) -> None:
    """Batches read in order: "batch 2/2" came before "batch 1/2 finished", as a batch finished
    only once its old instances had drained, which overlaps the next batch. It now finishes when
    its new instances serve and says its old ones drain now."""
    harness = await _fleet_on_v1(tmp_path, instances=2)
    record = await harness.deploy("v2")
    assert record.state is DeploymentState.SUCCEEDED
    events = harness.store.event_log[record.id]
    batches = [(e.kind.value, e.data["batch"]) for e in events if e.kind.value.startswith("batch_")]
    assert batches == [
        ("batch_started", 1),
        ("batch_finished", 1),
        ("batch_started", 2),
        ("batch_finished", 2),
    ]
    finished = [e for e in events if e.kind.value == "batch_finished"]
    assert all(e.message.endswith("; 1 old instance(s) drain now") for e in finished)
    assert all(len(e.data["retiring"]) == 1 for e in finished)
    kinds = [e.kind.value for e in events]
    for e in finished:  # each batch's old instance drains after its batch finished
        (old,) = e.data["retiring"]
        drained = next(
            i for i, x in enumerate(events) if x.kind.value == "drain_started" and old in x.message
        )
        assert drained > events.index(e)
    assert kinds[-1] == "state" and min(harness.router.serving_log) >= 2
