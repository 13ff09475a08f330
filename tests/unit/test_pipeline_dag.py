"""The pipeline DAG: order, cycles named, runnable set bounded by the limit."""

from __future__ import annotations

import pytest

from zerodown.config.pipeline import PipelineConfig
from zerodown.errors import PipelineDefinitionError
from zerodown.pipeline import dag

NEEDS = {
    "test": (),
    "scan": (),
    "build": ("test",),
    "publish": ("build", "scan"),
    "deploy": ("publish",),
}


def test_topological_order_puts_every_job_after_its_needs() -> None:
    order = dag.topological_order(NEEDS)
    assert order == ["test", "scan", "build", "publish", "deploy"]
    for job, needs in NEEDS.items():
        assert all(order.index(n) < order.index(job) for n in needs)


def test_a_cycle_is_refused_with_the_cycle_named() -> None:
    with pytest.raises(PipelineDefinitionError, match="a -> b -> c -> a"):
        dag.check_graph({"a": ("b",), "b": ("c",), "c": ("a",), "d": ()})


def test_an_unknown_need_is_refused_naming_it() -> None:
    with pytest.raises(PipelineDefinitionError, match="'build' needs 'compile'"):
        dag.check_graph({"build": ("compile",)})


def test_runnable_respects_needs_and_the_parallel_limit() -> None:
    first = dag.runnable(NEEDS, succeeded=set(), running=set(), finished=set(), limit=1)
    assert first == ["test"]
    both = dag.runnable(NEEDS, succeeded=set(), running=set(), finished=set(), limit=4)
    assert both == ["test", "scan"]
    after = dag.runnable(NEEDS, succeeded={"test"}, running={"scan"}, finished={"test"}, limit=4)
    assert after == ["build"]


def test_jobs_after_a_failed_need_are_blocked() -> None:
    blocked = dag.blocked(NEEDS, succeeded={"scan"}, finished={"test", "scan"})
    assert blocked == ["build"]


def test_the_config_model_refuses_a_cyclic_pipeline() -> None:
    with pytest.raises(ValueError, match="cycle"):
        PipelineConfig.model_validate(
            {
                "jobs": {
                    "a": {"command": "true", "needs": ["b"]},
                    "b": {"command": "true", "needs": ["a"]},
                }
            }
        )


def test_prod_gates_default_to_the_seeds_two_reviewers_five_minutes_and_a_scan() -> None:
    config = PipelineConfig.model_validate({"jobs": {"t": {"command": "true"}}})
    prod, dev = config.gates("prod"), config.gates("dev")
    assert (prod.approvals, prod.wait_timer, prod.scan_required) == (2, 300.0, True)
    assert (dev.approvals, dev.wait_timer, dev.scan_required) == (0, 0.0, False)
