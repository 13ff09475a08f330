"""`if:` conditions: branch and inputs, and nothing that could run code."""

from __future__ import annotations

import pytest

from zerodown.errors import PipelineDefinitionError
from zerodown.pipeline.conditions import ConditionFacts, evaluate

MAIN = ConditionFacts(branch="main", environment="prod", inputs={"skip_tests": "true"})
FEATURE = ConditionFacts(branch="feature/x", environment=None)


@pytest.mark.parametrize(
    ("condition", "on_main", "on_feature"),
    [
        (None, True, True),
        ("branch == 'main'", True, False),
        ("branch != 'main'", False, True),
        ("environment in ['prod', 'staging']", True, False),
        ("environment == ''", False, True),
        ("inputs.skip_tests == 'true'", True, False),
        ("inputs.skip_tests == true", True, False),
        ("inputs.missing == ''", True, True),
        ("startswith(branch, 'feature/') or branch == 'main'", True, True),
        ("not (branch == 'main' and inputs.skip_tests == 'true')", False, True),
    ],
)
def test_conditions_on_branch_environment_and_inputs(
    condition: str | None, on_main: bool, on_feature: bool
) -> None:
    assert evaluate(condition, MAIN) is on_main
    assert evaluate(condition, FEATURE) is on_feature


@pytest.mark.parametrize(
    "condition",
    ["__import__('os').system('true')", "branch.upper() == 'MAIN'", "unknown == 'x'", "1 +"],
)
def test_anything_else_is_refused_without_running_it(condition: str) -> None:
    with pytest.raises(PipelineDefinitionError, match="if:"):
        evaluate(condition, MAIN)


def test_a_bad_condition_fails_when_the_config_loads() -> None:
    from zerodown.config.pipeline import PipelineConfig

    with pytest.raises(ValueError, match="unknown name"):
        PipelineConfig.model_validate({"jobs": {"a": {"command": "true", "if": "branh == 'x'"}}})
