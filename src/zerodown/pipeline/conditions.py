"""`if:` conditions of pipeline jobs: a tiny, safe expression language over the run's facts.

    branch == 'main'
    environment in ['prod', 'staging'] and inputs.skip_tests != 'true'
    not startswith(branch, 'release/')

Names: `branch`, `environment` ('' when the branch deploys nowhere), `sha`, `trigger`,
`inputs.<name>` ('' when not given). Operators: ==, !=, in, not in, and, or, not; the function
`startswith(text, prefix)`. Nothing else parses, so a condition can never run code.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zerodown.errors import PipelineDefinitionError


@dataclass(frozen=True)
class ConditionFacts:
    """What a condition may look at."""

    branch: str
    environment: str | None
    sha: str = ""
    trigger: str = "cli"
    inputs: Mapping[str, str] = field(default_factory=dict)


def evaluate(condition: str | None, facts: ConditionFacts) -> bool:
    """True when the job should run; a missing condition is true. Raises
    `PipelineDefinitionError` naming the condition when it is not valid."""
    if condition is None or not condition.strip():
        return True
    try:
        tree = ast.parse(condition.strip(), mode="eval")
    except SyntaxError as exc:
        raise PipelineDefinitionError(f"if: {condition!r} is not a valid condition") from exc
    try:
        return bool(_value(tree.body, facts))
    except _Unsupported as exc:
        raise PipelineDefinitionError(f"if: {condition!r}: {exc}") from None


def check(condition: str | None) -> None:
    """Raise `PipelineDefinitionError` if `condition` would not evaluate (checked up front)."""
    evaluate(condition, ConditionFacts(branch="", environment=None))


class _Unsupported(Exception):
    pass


def _value(node: ast.expr, facts: ConditionFacts) -> Any:
    if isinstance(node, ast.BoolOp):
        values = (_value(item, facts) for item in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return not _value(node.operand, facts)
    if isinstance(node, ast.Compare):
        return _compare(node, facts)
    if isinstance(node, ast.Constant) and isinstance(node.value, str | bool | int):
        return node.value
    if isinstance(node, ast.List | ast.Tuple):
        return [_value(item, facts) for item in node.elts]
    if isinstance(node, ast.Name):
        return _name(node.id, facts)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        if node.value.id == "inputs":
            return facts.inputs.get(node.attr, "")
        raise _Unsupported(f"unknown name {node.value.id}.{node.attr}: only inputs.<name>")
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "startswith"
        and len(node.args) == 2
        and not node.keywords
    ):
        text, prefix = (_value(arg, facts) for arg in node.args)
        return str(text).startswith(str(prefix))
    raise _Unsupported(f"{ast.unparse(node)!r} is not supported here")


def _name(name: str, facts: ConditionFacts) -> str:
    known = {
        "branch": facts.branch,
        "environment": facts.environment or "",
        "sha": facts.sha,
        "trigger": facts.trigger,
    }
    if name in ("true", "false"):
        return name
    if name not in known:
        raise _Unsupported(
            f"unknown name {name!r} (use branch, environment, sha, trigger, inputs.X)"
        )
    return known[name]


def _compare(node: ast.Compare, facts: ConditionFacts) -> bool:
    left = _value(node.left, facts)
    for op, right_node in zip(node.ops, node.comparators, strict=True):
        right = _value(right_node, facts)
        if isinstance(op, ast.Eq):
            ok = _text(left) == _text(right)
        elif isinstance(op, ast.NotEq):
            ok = _text(left) != _text(right)
        elif isinstance(op, ast.In | ast.NotIn):
            if not isinstance(right, list):
                raise _Unsupported("`in` needs a list on its right, e.g. ['dev', 'prod']")
            found = _text(left) in [_text(item) for item in right]
            ok = found if isinstance(op, ast.In) else not found
        else:
            raise _Unsupported(f"operator {type(op).__name__} is not supported")
        if not ok:
            return False
        left = right
    return True


def _text(value: Any) -> str:
    # Inputs arrive as strings: compare everything as text so `true` (or True) == 'true'.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
