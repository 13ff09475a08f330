"""Dependency checks: DB, Redis, ... as the app's own health endpoint reports them.

Spring Boot's actuator answers `{"status": "UP", "components": {"db": {"status": "UP"}, ...}}`
(with 503 when one is down); a FastAPI app reports whatever JSON it likes, so each component is a
name and a JSON path. Each component on each instance is its own result, so "Redis is down on
api-2" reads as such instead of as a failed health check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx

from zerodown.config.verify import DependenciesConfig, DependencyCheck
from zerodown.verify.jsonpath import MISSING, json_equal, parse_json_path
from zerodown.verify.results import CheckResult, shown
from zerodown.verify.smoke import SmokeTarget


def components_to_check(config: DependenciesConfig, document: Any) -> dict[str, DependencyCheck]:
    """The configured components, plus every `$.components` entry when `all_components`."""
    wanted = dict(config.components)
    if config.all_components:
        listed = document.get("components") if isinstance(document, dict) else None
        covered = {parse_json_path(check.path).steps for check in wanted.values()}
        for key in listed if isinstance(listed, dict) else {}:
            path = f"$.components[{key!r}].status"
            if ("components", key, "status") not in covered and key not in wanted:
                wanted[key] = DependencyCheck(path=path)
    return wanted


def judge_components(
    config: DependenciesConfig, document: Any, target: str, http_status: int
) -> list[CheckResult]:
    """One result per component found in one health document."""
    results = []
    for name, check in components_to_check(config, document).items():
        value = parse_json_path(check.path).find(document)
        numbers: dict[str, Any] = {"http_status": http_status, "path": check.path}
        if value is MISSING:
            ok, detail = False, f"{check.path} is missing from the health response"
        else:
            numbers["status"] = value
            ok = json_equal(value, check.expect)
            detail = shown(value) if ok else f"{shown(value)}, want {shown(check.expect)}"
        results.append(CheckResult(name, "dependency", target, ok, detail, numbers))
    return results


async def check_dependencies(
    config: DependenciesConfig,
    endpoint: str,
    targets: Sequence[SmokeTarget],
    client: httpx.AsyncClient,
) -> list[CheckResult]:
    """Ask every target's health endpoint and judge each component (targets in parallel)."""
    path = config.endpoint or endpoint
    per_target = await asyncio.gather(
        *(_check_one(config, path, target, client) for target in targets)
    )
    return [result for results in per_target for result in results]


async def _check_one(
    config: DependenciesConfig, path: str, target: SmokeTarget, client: httpx.AsyncClient
) -> list[CheckResult]:
    headers = {"Host": target.host_header} if target.host_header else {}
    try:
        response = await client.get(target.base_url + path, headers=headers, timeout=config.timeout)
        # Spring answers 503 with the components when one is down: the body still counts.
        document = response.json()
    except httpx.HTTPError as exc:
        return _unreachable(config, target, f"GET {path} failed: {exc or type(exc).__name__}")
    except ValueError:
        return _unreachable(config, target, f"GET {path} did not answer JSON")
    return judge_components(config, document, target.name, response.status_code)


def _unreachable(config: DependenciesConfig, target: SmokeTarget, why: str) -> list[CheckResult]:
    names = list(config.components) or ["components"]
    return [CheckResult(name, "dependency", target.name, False, why) for name in names]
