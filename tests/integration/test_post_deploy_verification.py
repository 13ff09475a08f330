"""Post-deploy verification end to end: real router daemon, LocalRuntime instances, SQLite history.
A failed check fails the deployment and the fleet is rolled back to the previous revision."""

from __future__ import annotations

import pytest
from tests.integration.test_deploy_local import stack
from tests.integration.verify_fixtures import (
    VERIFY_APP,
    WEBAPP,
    VerifyStack,
    run_command,
    verify_stack,
)

from zerodown.config.loader import load_config
from zerodown.control_plane import ControlPlane
from zerodown.domain.events import DeploymentState, EventKind
from zerodown.verify.verifier import PostDeployVerifier

__all__ = ["stack", "verify_stack"]  # the fixtures, imported so pytest finds them

pytestmark = [pytest.mark.timeout(120)]  # each test deploys 1-2 times: about 1-3 s

HEALTH_SMOKE = {"path": "/health", "expect_json": [{"path": "$.status", "equals": "UP"}]}


async def test_smoke_checks_pass_on_every_instance_and_through_the_router(
    verify_stack: VerifyStack,
) -> None:
    """Two instances: each is checked directly, the router check carries the route's Host."""
    verify = {
        "smoke": [
            HEALTH_SMOKE,
            {
                "name": "host header",
                "path": "/headers",
                "via": "router",
                "expect_json": [{"path": "$.headers.host", "equals": "api.test"}],
            },
            {
                "name": "echo",
                "method": "POST",
                "path": "/echo",
                "body": {"hello": "zerodown"},
                "via": "both",
                "max_latency": "5s",
            },
        ]
    }
    loaded = verify_stack.write_config(run=run_command(WEBAPP), verify=verify, instances=2)
    record = await verify_stack.deploy(loaded, "v1")
    assert record.state is DeploymentState.SUCCEEDED, record.reason
    events = await verify_stack.verify_events(record)
    checks = [(e.data["check"], e.data["target"]) for e in events if "check" in e.data]
    instances = sorted(i.instance_id for i in await verify_stack.runtime.list("api"))
    assert sorted(t for c, t in checks if c == "GET /health") == instances
    assert [t for c, t in checks if c == "host header"] == ["router"]
    assert sorted(t for c, t in checks if c == "echo") == sorted([*instances, "router"])
    assert all(e.data["ok"] and e.data["status"] == 200 for e in events if "check" in e.data)
    assert all(e.data["latency_ms"] >= 0 for e in events if "check" in e.data)
    summary = events[-1]
    assert summary.data["summary"] and summary.data["ok"] and summary.data["passed"] == 6


async def test_a_missing_body_field_fails_and_rolls_the_fleet_back_to_v1(
    verify_stack: VerifyStack,
) -> None:
    """v2 must answer `$.data.token` on `/`; the app lacks it: rolled back, v1 runs again."""
    run = run_command(WEBAPP)
    v1 = await verify_stack.deploy(
        verify_stack.write_config(run=run, verify={"smoke": [HEALTH_SMOKE]}), "v1"
    )
    assert v1.state is DeploymentState.SUCCEEDED, v1.reason
    strict = {"smoke": [{"name": "login token", "path": "/", "expect_json": ["$.data.token"]}]}
    record = await verify_stack.deploy(verify_stack.write_config(run=run, verify=strict), "v2")
    assert record.state is DeploymentState.ROLLED_BACK
    assert "smoke check login token failed" in (record.reason or "")
    assert "$.data.token is missing" in (record.reason or "")
    assert await verify_stack.running_revisions() == ["v1"]
    events = await verify_stack.verify_events(record)
    assert [e.data["ok"] for e in events] == [False, False]  # the check, then the summary
    assert events[-1].data["failures"][0].startswith("login token (api-prod-v2-")


async def test_latency_over_budget_fails_the_deployment(verify_stack: VerifyStack) -> None:
    """Revision `slow` answers `/` 600 ms late against a 250 ms budget: rolled back to v1."""
    run = run_command(WEBAPP, {"slow": "EXTRA_LATENCY_MS=600"})
    verify = {"smoke": [{"path": "/", "max_latency": "250ms"}]}
    loaded = verify_stack.write_config(run=run, verify=verify)
    v1 = await verify_stack.deploy(loaded, "v1")
    assert v1.state is DeploymentState.SUCCEEDED, v1.reason
    record = await verify_stack.deploy(loaded, "slow")
    assert record.state is DeploymentState.ROLLED_BACK
    assert "budget 250 ms" in (record.reason or "")
    (check, _summary) = await verify_stack.verify_events(record)
    assert check.data["latency_ms"] > 250 and check.data["status"] == 200
    assert await verify_stack.running_revisions() == ["v1"]


async def test_log_scan_over_its_threshold_fails_the_deployment(verify_stack: VerifyStack) -> None:
    """Revision `noisy` prints 3 ERROR lines, 1 is allowed: the log scan fails it."""
    run = run_command(VERIFY_APP, {"noisy": "ERROR_LINES=3"})
    verify = {"log_scan": {"window": "300ms", "filters": [{"preset": "error-lines", "max": 1}]}}
    loaded = verify_stack.write_config(run=run, verify=verify, health_path="/")
    v1 = await verify_stack.deploy(loaded, "v1")
    assert v1.state is DeploymentState.SUCCEEDED, v1.reason
    (clean, _summary) = await verify_stack.verify_events(v1)
    assert clean.data["ok"] and clean.data["count"] == 0
    record = await verify_stack.deploy(loaded, "noisy")
    assert record.state is DeploymentState.ROLLED_BACK
    assert "log scan error-lines failed" in (record.reason or "")
    (scan, _summary) = await verify_stack.verify_events(record)
    assert scan.data["count"] == 3 and scan.data["max"] == 1 and not scan.data["ok"]
    assert "ERROR payment gateway timeout #0" in scan.data["detail"]
    assert await verify_stack.running_revisions() == ["v1"]


async def test_dependency_checks_are_separate_events_and_a_down_one_fails(
    verify_stack: VerifyStack,
) -> None:
    """DB and Redis from a Spring-style health endpoint: one event each; Redis DOWN fails."""
    run = run_command(VERIFY_APP, {"redisdown": "REDIS_DOWN=1"})
    verify = {
        "dependencies": {
            "endpoint": "/actuator/health",
            "components": {
                "DB": "$.components.db.status",
                "Redis": "$.components.redis.status",
            },
        }
    }
    loaded = verify_stack.write_config(run=run, verify=verify, health_path="/")
    v1 = await verify_stack.deploy(loaded, "v1")
    assert v1.state is DeploymentState.SUCCEEDED, v1.reason
    events = await verify_stack.verify_events(v1)
    assert [(e.data.get("check"), e.data["ok"]) for e in events] == [
        ("DB", True),
        ("Redis", True),
        (None, True),
    ]
    record = await verify_stack.deploy(loaded, "redisdown")
    assert record.state is DeploymentState.ROLLED_BACK
    db, redis, summary = await verify_stack.verify_events(record)
    assert db.kind is EventKind.VERIFY and db.data["ok"] and db.data["status"] == "UP"
    assert not redis.data["ok"] and redis.data["status"] == "DOWN"
    assert redis.data["http_status"] == 503
    assert "dependency Redis failed" in (record.reason or "")
    assert not summary.data["ok"]
    assert await verify_stack.running_revisions() == ["v1"]


async def test_control_plane_adds_the_verifier_only_when_verify_is_configured(
    verify_stack: VerifyStack,
) -> None:
    """`verify:` on a service puts a PostDeployVerifier on the control plane's deployments."""
    loaded = verify_stack.write_config(run=run_command(WEBAPP), verify={"smoke": [HEALTH_SMOKE]})
    plane = ControlPlane(loaded, verify_stack.runtime, verify_stack.router, verify_stack.store)
    assert any(isinstance(v, PostDeployVerifier) for v in plane.extensions().verifiers)
    bare = verify_stack.write_config(run=run_command(WEBAPP), verify=None)
    plane = ControlPlane(
        load_config(bare.path, environ={}),
        verify_stack.runtime,
        verify_stack.router,
        verify_stack.store,
    )
    assert not any(isinstance(v, PostDeployVerifier) for v in plane.extensions().verifiers)
