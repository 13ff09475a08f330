"""Post-deploy verification, piece by piece: the JSON path subset, assertions, the `verify:` config
and its environment merge, dependency judging, the log counter and how results read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from tests.unit.fakes import FakeRouter, FakeRuntime

from zerodown.clock import FakeClock
from zerodown.config.model import EnvironmentConfig, ServiceConfig, ZerodownConfig
from zerodown.config.verify import (
    DependenciesConfig,
    JsonAssertion,
    LogFilterConfig,
    SmokeCheck,
    VerifyConfig,
    merge_verify,
)
from zerodown.domain.events import DeploymentState, EventKind
from zerodown.domain.records import DeploymentRecord
from zerodown.engine.extensions import DeploymentContext
from zerodown.errors import VerificationFailed
from zerodown.metrics.logfilters import ERROR_LINES, SLOW_QUERIES, count_matches
from zerodown.runtimes.base import InstanceSpec, ReleaseDirectory
from zerodown.verify.dependencies import judge_components
from zerodown.verify.jsonpath import MISSING, parse_json_path
from zerodown.verify.logscan import to_filter
from zerodown.verify.results import CheckResult, failure_reason, summarize
from zerodown.verify.smoke import SmokeTarget, check_assertion, router_target, run_smoke_check
from zerodown.verify.verifier import PostDeployVerifier

DOCUMENT = {
    "data": {"token": "eyJhbGciOi.abc", "user": {"id": 7, "admin": False}},
    "items": [{"id": "a"}, {"id": "b"}],
    "a.b": 1,
    "nothing": None,
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$.data.token", "eyJhbGciOi.abc"),
        ("data.user.id", 7),
        ("$.items[1].id", "b"),
        ("$.items[-1].id", "b"),
        ("$['a.b']", 1),
        ('$["data"].user.admin', False),
        ("$.nothing", None),
        ("$", DOCUMENT),
        ("$.items[2]", MISSING),
        ("$.data.missing", MISSING),
        ("$.data.token.deeper", MISSING),
    ],
)
def test_json_path_finds_dotted_keys_indexes_and_quoted_keys(path: str, expected: Any) -> None:
    assert parse_json_path(path).find(DOCUMENT) == expected


@pytest.mark.parametrize("path", ["$..token", "$.items[*]", "$.a[", "$.items[?(@.id)]"])
def test_json_path_outside_the_subset_is_refused_with_a_hint(path: str) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        parse_json_path(path)


@pytest.mark.parametrize(
    ("assertion", "problem"),
    [
        ("$.data.token", None),
        ({"path": "$.data.user.id", "equals": 7}, None),
        ({"path": "$.data.token", "matches": r"^eyJ"}, None),
        ({"path": "$.data.secret", "exists": False}, None),
        ({"path": "$.nothing", "equals": None}, None),
        ("$.data.refresh", "$.data.refresh is missing"),
        ({"path": "$.data.user.id", "equals": 8}, "$.data.user.id is 7, want 8"),
        ({"path": "$.data.user.admin", "equals": 0}, "$.data.user.admin is False, want 0"),
        ({"path": "$.nothing", "equals": "x"}, "$.nothing is None, want 'x'"),
        (
            {"path": "$.data.token", "matches": r"^Bearer "},
            "$.data.token is 'eyJhbGciOi.abc', which does not match /^Bearer /",
        ),
        ({"path": "$.data.user", "exists": False}, "$.data.user should be absent, found"),
    ],
)
def test_json_assertions_say_what_they_found(assertion: Any, problem: str | None) -> None:
    found = check_assertion(JsonAssertion.model_validate(assertion), DOCUMENT)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem)


def test_config_refuses_bad_paths_regexes_and_contradictions() -> None:
    for bad in (
        {"path": "$..x"},
        {"path": "$.x", "matches": "("},
        {"path": "$.x", "exists": False, "equals": 1},
    ):
        with pytest.raises(ValidationError):
            JsonAssertion.model_validate(bad)
    with pytest.raises(ValidationError, match="distinct names"):
        VerifyConfig.model_validate({"smoke": [{"path": "/"}, {"path": "/"}]})
    with pytest.raises(ValidationError, match="preset"):
        LogFilterConfig.model_validate({"name": "x"})
    with pytest.raises(ValidationError, match="no group"):
        LogFilterConfig.model_validate({"name": "x", "pattern": "took", "value_field": "ms"})
    with pytest.raises(ValidationError, match="components"):
        DependenciesConfig.model_validate({})


def test_verify_hangs_on_services_and_environments_in_zerodown_yml() -> None:
    config = ZerodownConfig.model_validate(
        {
            "services": {
                "api": {
                    "run": "python app.py",
                    "verify": {
                        "smoke": [
                            {"path": "/health", "status": 200, "max_latency": "300ms"},
                            {
                                "name": "login",
                                "method": "POST",
                                "path": "/api/login",
                                "body": {"user": "smoke"},
                                "expect_json": ["$.data.token"],
                            },
                        ],
                        "dependencies": {"components": {"DB": "$.components.db.status"}},
                        "log_scan": {"window": "1m", "filters": ["error-lines"]},
                    },
                }
            },
            "environments": {"dev": {"verify": {"enabled": False}}},
        }
    )
    verify = config.services["api"].verify
    assert verify is not None
    assert verify.smoke[0].status == (200,) and verify.smoke[0].max_latency == 0.3
    assert verify.smoke[1].label == "login"
    assert verify.smoke[1].expect_json[0].path == "$.data.token"
    assert verify.log_scan is not None and verify.log_scan.window == 60.0
    merged = merge_verify(verify, config.environments["dev"].verify)
    assert merged is not None and not merged.enabled and len(merged.smoke) == 2


def test_environment_verify_replaces_same_named_checks_and_adds_new_ones() -> None:
    service = VerifyConfig.model_validate(
        {
            "smoke": [{"path": "/health"}, {"name": "login", "path": "/login"}],
            "log_scan": {"window": 30},
        }
    )
    environment = VerifyConfig.model_validate(
        {
            "smoke": [{"name": "login", "path": "/v2/login"}, {"path": "/pdf"}],
            "log_scan": None,
            "timeout": 60,
        }
    )
    merged = merge_verify(service, environment)
    assert merged is not None
    assert [(c.label, c.path) for c in merged.smoke] == [
        ("GET /health", "/health"),
        ("login", "/v2/login"),
        ("GET /pdf", "/pdf"),
    ]
    assert merged.log_scan is None and merged.timeout == 60
    assert merge_verify(None, environment) is environment
    assert merge_verify(service, None) is service
    assert merge_verify(None, None) is None


def test_dependencies_are_judged_one_result_per_component() -> None:
    spring = {
        "status": "DOWN",
        "components": {
            "db": {"status": "UP"},
            "redis": {"status": "DOWN", "details": {"error": "refused"}},
            "diskSpace": {"status": "UP"},
        },
    }
    config = DependenciesConfig.model_validate(
        {"components": {"DB": "$.components.db.status"}, "all_components": True}
    )
    results = judge_components(config, spring, "api-1", 503)
    by_name = {r.check: r for r in results}
    assert list(by_name) == ["DB", "redis", "diskSpace"]  # db is not checked twice
    assert by_name["DB"].ok and by_name["diskSpace"].ok
    assert not by_name["redis"].ok
    assert by_name["redis"].detail == "'DOWN', want 'UP'"
    assert by_name["redis"].numbers == {
        "http_status": 503,
        "path": "$.components['redis'].status",
        "status": "DOWN",
    }
    custom = DependenciesConfig.model_validate(
        {"components": {"Redis": {"path": "$.checks.redis", "expect": True}}}
    )
    (missing,) = judge_components(custom, {"checks": {}}, "api-1", 200)
    assert not missing.ok and "missing" in missing.detail


def test_log_counter_counts_each_filter_and_honours_value_thresholds(tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    log.write_text(
        "INFO started\n"
        "ERROR payment gateway timeout\n"
        "an ERRORS word does not count\n"
        "query took 1500 ms\n"
        "query took 20 ms\n"
        + json.dumps({"msg": "slow", "duration_ms": 2500, "level": "ERROR"})
        + "\n"
    )
    counts = count_matches([log], [ERROR_LINES, SLOW_QUERIES], since=None)
    assert counts == {"error_lines": 2, "slow_queries": 1}
    custom = to_filter(
        LogFilterConfig(
            name="json-slow",
            pattern=r'"duration_ms": (?P<ms>\d+)',
            value_field="ms",
            threshold=1000,
        )
    )
    assert count_matches([log], [custom], since=None) == {"json-slow": 1}
    # A file last written before the window is not part of it.
    assert count_matches([log], [ERROR_LINES], since=log.stat().st_mtime + 60) == {"error_lines": 0}


def test_results_read_as_sentences_and_carry_their_numbers() -> None:
    ok = CheckResult("GET /health", "smoke", "api-1", True, "200 in 12 ms", {"status": 200})
    bad = CheckResult("login", "smoke", "api-2", False, "status 500, want 200", {"status": 500})
    redis = CheckResult("Redis", "dependency", "api-2", False, "'DOWN', want 'UP'")
    assert ok.message() == "smoke check GET /health on api-1 passed: 200 in 12 ms"
    assert bad.message() == "smoke check login on api-2 FAILED: status 500, want 200"
    assert bad.event_data() == {
        "check": "login",
        "kind": "smoke",
        "target": "api-2",
        "ok": False,
        "detail": "status 500, want 200",
        "status": 500,
    }
    assert failure_reason([ok, bad, redis]) == (
        "smoke check login failed on api-2: status 500, want 200 (and 1 more failed check(s))"
    )
    message, data = summarize([ok, bad, redis], 1.234)
    assert message == "verification failed: 2 of 3 check(s) failed (login (api-2), Redis (api-2))"
    assert data == {
        "summary": True,
        "ok": False,
        "passed": 1,
        "failed": 2,
        "failures": ["login (api-2)", "Redis (api-2)"],
        "seconds": 1.234,
    }
    assert summarize([ok], 0.5)[0] == "verification passed: 1 check(s) in 0.5 s"
    message, data = summarize([ok], 9, error="verification did not finish within 5 s")
    assert message == "verification failed: verification did not finish within 5 s"
    assert data["ok"] is False


def test_router_target_connects_to_loopback_and_sends_the_route_host() -> None:
    assert router_target("0.0.0.0:8080", ("api.example.com",)) == SmokeTarget(
        "router", "http://127.0.0.1:8080", "api.example.com"
    )
    assert router_target("[::]:80", ()) == SmokeTarget("router", "http://[::1]:80", None)


async def test_smoke_check_sends_body_and_host_and_reports_every_problem() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"data": {}})

    check = SmokeCheck.model_validate(
        {
            "method": "POST",
            "path": "/api/login",
            "body": {"user": "smoke"},
            "status": [200],
            "expect_json": ["$.data.token"],
            "expect_text": "token",
        }
    )
    target = SmokeTarget("router", "http://127.0.0.1:1", "api.example.com")
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        result = await run_smoke_check(check, target, client, FakeClock())
    assert json.loads(seen[0].content) == {"user": "smoke"}
    assert seen[0].headers["host"] == "api.example.com"
    assert not result.ok
    assert result.detail == (
        "status 201, want 200; $.data.token is missing; body does not contain 'token'"
    )
    assert result.numbers["status"] == 201 and result.numbers["method"] == "POST"


class _Emitted:
    """Collects what a verifier records through `ctx.emit`."""

    def __init__(self) -> None:
        self.events: list[tuple[EventKind, str, dict[str, Any]]] = []

    async def __call__(self, kind: EventKind, message: str, data: dict[str, Any] | None) -> None:
        self.events.append((kind, message, dict(data or {})))


async def _context(
    verify: dict[str, Any], *, kind: str = "deploy", running: bool = True
) -> tuple[DeploymentContext, _Emitted]:
    service = ServiceConfig.model_validate({"run": "python app.py", "verify": verify})
    record = DeploymentRecord(
        "d1", "api", "prod", "v2", "rolling", DeploymentState.IN_PROGRESS, "t", 1.0, kind=kind
    )
    runtime = FakeRuntime()
    if running:
        labels = {"deployment": "d1", "environment": "prod"}
        spec = InstanceSpec("api", "v2", "api-1", ReleaseDirectory("true", "."), labels=labels)
        await runtime.start(spec)
    emitted = _Emitted()
    ctx = DeploymentContext(
        record, service, EnvironmentConfig(), "api.prod", runtime, FakeRouter(), emitted
    )
    return ctx, emitted


async def test_verifier_skips_manual_rollbacks_and_disabled_verification() -> None:
    ctx, emitted = await _context({"smoke": [{"path": "/"}]}, kind="rollback")
    await PostDeployVerifier(clock=FakeClock()).verify(ctx)
    assert [(kind, data.get("skipped")) for kind, _, data in emitted.events] == [
        (EventKind.VERIFY, True)
    ]
    ctx, emitted = await _context({"enabled": False, "smoke": [{"path": "/"}]})
    await PostDeployVerifier(clock=FakeClock()).verify(ctx)
    assert emitted.events == []


async def test_verifier_fails_without_a_running_new_instance_and_says_so() -> None:
    ctx, emitted = await _context({"smoke": [{"path": "/"}]}, running=False)
    with pytest.raises(VerificationFailed, match="no running instance"):
        await PostDeployVerifier(clock=FakeClock()).verify(ctx)
    ((kind, message, data),) = emitted.events
    assert kind is EventKind.VERIFY and data["summary"] and not data["ok"]
    assert message == "verification failed: no running instance of the new revision to verify"


async def test_verifier_fails_when_it_runs_past_its_timeout() -> None:
    """The log scan's bake window never ends on a fake clock: the 50 ms timeout ends it."""
    ctx, emitted = await _context({"log_scan": {"window": "10m"}, "timeout": "50ms"})
    with pytest.raises(VerificationFailed, match=r"did not finish within 0\.05 s") as caught:
        await PostDeployVerifier(clock=FakeClock()).verify(ctx)
    assert caught.value.checks == ("timeout",)
    assert emitted.events[0][0] is EventKind.DECISION  # the bake started
    assert emitted.events[-1][2]["error"] == "verification did not finish within 0.05 s"
