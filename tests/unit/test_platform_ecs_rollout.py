"""The ECS platform through the Platform seam, on recorded DescribeServices sequences.

moto never progresses an ECS deployment (and lacks the ServiceDeployments API), so the rollout
logic runs here against `RecordedEcs`: every request is checked by botocore's own validator
against the installed service model (the re-register whitelist meets the real input shape),
DescribeServices answers come from tests/data/ecs/<sequence>.json (written to AWS's documented
shapes; see the README there), and time is a FakeClock: no real sleeps.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Awaitable
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.validate import validate_parameters
from tests.unit.fakes import Harness, make_loaded

from zerodown.clock import Clock, FakeClock
from zerodown.config.loader import LoadedConfig
from zerodown.config.model import ZerodownConfig
from zerodown.config.platform import PlatformConfig
from zerodown.domain.events import DeploymentEvent, DeploymentState, EventKind
from zerodown.domain.records import DeploymentRecord
from zerodown.engine.deployer import DeployRequest
from zerodown.engine.extensions import DeploymentContext
from zerodown.engine.recovery import recover_unfinished
from zerodown.errors import AlarmTriggered, PlatformError
from zerodown.platforms.ecs.client import Throttled
from zerodown.platforms.ecs.platform import EcsPlatform

DATA = Path(__file__).parent.parent / "data" / "ecs"
FAMILY = "arn:aws:ecs:ap-northeast-2:123456789012:task-definition/gaekdam-ai"
OLD = f"{FAMILY}:3"
OURS = "ecs-svc/2222222222222222222"
IMAGE = "123456789012.dkr.ecr.ap-northeast-2.amazonaws.com/gaekdam-ai@sha256:" + "b" * 64
TG = "arn:aws:elasticloadbalancing:ap-northeast-2:123456789012:targetgroup/gaekdam-ai/0123"
READ_ONLY = {
    "taskDefinitionArn",
    "revision",
    "status",
    "requiresAttributes",
    "compatibilities",
    "registeredAt",
    "registeredBy",
    "deregisteredAt",
    "deleteRequestedAt",
}
_MODELS: dict[str, Any] = {}


def _model(service: str) -> Any:
    if service not in _MODELS:  # a client is only a model here: it never sends anything
        client = boto3.client(
            service,  # type: ignore[call-overload]
            region_name="ap-northeast-2",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        _MODELS[service] = client.meta
    return _MODELS[service]


def _load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def _dated(value: Any) -> Any:
    """ISO strings of `createdAt` as the datetimes botocore returns."""
    if isinstance(value, dict):
        return {
            k: datetime.fromisoformat(v) if k == "createdAt" else _dated(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_dated(v) for v in value]
    return value


class RecordedEcs:
    """`AwsApi` answering from recorded files; every request validated by botocore first."""

    def __init__(self, sequence: str) -> None:
        recorded = _load(f"{sequence}.json")
        self.frames: list[dict[str, Any]] = recorded["frames"]
        self.deployments: list[dict[str, Any]] | None = recorded.get("service_deployments")
        self.looks = 0
        self.service: dict[str, Any] = _load("service.json")
        self.definitions: dict[str, dict[str, Any]] = {OLD: _load("task_definition.json")}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.frame = -1  # the frame of the current deployment; -1 before any update
        self.revision = 3
        self.updated = asyncio.Event()  # set by the first UpdateService

    def input_members(self, service: str, operation: str) -> frozenset[str]:
        meta = _model(service)
        shape = meta.service_model.operation_model(meta.method_to_api_mapping[operation])
        return frozenset(shape.input_shape.members)

    async def call(self, aws_service: str, operation: str, /, **params: Any) -> dict[str, Any]:
        meta = _model(aws_service)
        shape = meta.service_model.operation_model(meta.method_to_api_mapping[operation])
        validate_parameters(params, shape.input_shape)  # raises ParamValidationError
        self.calls.append((operation, copy.deepcopy(params)))
        newer_api = "service_deployment" in operation or "service_revision" in operation
        if newer_api and self.deployments is None:  # as BotoApi translates moto's HTTP 500
            raise PlatformError(f"ECS refused ecs:{shape.name}: 500")
        return _dated(getattr(self, operation)(**params))

    def ops(self, *names: str) -> list[tuple[str, dict[str, Any]]]:
        return [(op, p) for op, p in self.calls if not names or op in names]

    # ECS
    def describe_services(self, cluster: str, services: list[str]) -> dict[str, Any]:
        answer = copy.deepcopy(self.service)
        if self.frame >= 0:
            frame = self.frames[min(self.frame, len(self.frames) - 1)]
            self.frame += 1
            if "error" in frame:
                raise Throttled("AWS throttled ecs:DescribeServices after 5 attempts")
            new = self.service["taskDefinition"]
            answer.update(json.loads(json.dumps(frame).replace("$NEW", new)))
            if "taskDefinition" in frame:  # ECS moved the service (a rollback of its own)
                self.service["taskDefinition"] = frame["taskDefinition"]
        return {"services": [answer], "failures": []}

    def describe_task_definition(self, taskDefinition: str, **_: Any) -> dict[str, Any]:
        return copy.deepcopy(self.definitions[taskDefinition])

    def register_task_definition(self, **payload: Any) -> dict[str, Any]:
        self.revision += 1
        arn = f"{FAMILY}:{self.revision}"
        tags = payload.pop("tags", [])
        self.definitions[arn] = {
            "taskDefinition": {**payload, "taskDefinitionArn": arn, "revision": self.revision},
            "tags": tags,
        }
        return {"taskDefinition": self.definitions[arn]["taskDefinition"], "tags": tags}

    def update_service(self, **params: Any) -> dict[str, Any]:
        self.updated.set()
        self.service["taskDefinition"] = params["taskDefinition"]
        if "deploymentConfiguration" in params:  # a deployment of ours: its sequence starts
            self.frame = 0
        else:  # our rollback: ECS answers as after it
            self.frame = -1
        answer = copy.deepcopy(self.service)
        answer["deployments"] = [
            {"id": OURS, "status": "PRIMARY", "taskDefinition": params["taskDefinition"]},
            *self.service["deployments"],
        ]
        return {"service": answer}

    def list_service_deployments(self, **_: Any) -> dict[str, Any]:
        assert self.deployments is not None
        first = self.deployments[0]
        brief = {
            "serviceDeploymentArn": first["serviceDeploymentArn"],
            "targetServiceRevisionArn": first["targetServiceRevision"]["arn"],
            "status": first["status"],
        }
        other = {**brief, "serviceDeploymentArn": "arn:other", "targetServiceRevisionArn": "r0"}
        return {"serviceDeployments": [other, brief]}

    def describe_service_revisions(self, serviceRevisionArns: list[str]) -> dict[str, Any]:
        (arn,) = serviceRevisionArns
        ours = self.service["taskDefinition"] if arn != "r0" else OLD
        return {"serviceRevisions": [{"serviceRevisionArn": arn, "taskDefinition": ours}]}

    def describe_service_deployments(self, serviceDeploymentArns: list[str]) -> dict[str, Any]:
        assert self.deployments is not None
        assert serviceDeploymentArns == [self.deployments[0]["serviceDeploymentArn"]]
        found = self.deployments[min(self.looks, len(self.deployments) - 1)]
        self.looks += 1
        return {"serviceDeployments": [found]}

    # ELBv2
    def describe_target_groups(self, TargetGroupArns: list[str]) -> dict[str, Any]:
        group = {"TargetGroupArn": TG, "HealthCheckIntervalSeconds": 15, "HealthyThresholdCount": 2}
        return {"TargetGroups": [group]}

    def describe_target_group_attributes(self, TargetGroupArn: str) -> dict[str, Any]:
        return {"Attributes": [{"Key": "deregistration_delay.timeout_seconds", "Value": "30"}]}


def _loaded(
    tmp_path: Path,
    *,
    image: str | None = IMAGE,
    auto_rollback: bool = True,
    strategy: str = "rolling",
) -> Any:
    platform: dict[str, Any] = {
        "kind": "ecs",
        "cluster": "gaekdam",
        "service": "ai",
        "container": "app",
        "region": "ap-northeast-2",
        "poll_interval": 10,
    }
    if image:
        platform["image"] = image
    data = {
        "state_dir": str(tmp_path / "state"),
        "services": {"ai": {"platform": platform}},
        "environments": {"prod": {"auto_rollback": auto_rollback, "strategy": {"type": strategy}}},
    }
    return LoadedConfig(ZerodownConfig.model_validate(data), tmp_path / "zerodown.yml", tmp_path)


class EcsHarness:
    """A Deployer whose `ai` service is on ECS, over RecordedEcs and a FakeClock."""

    def __init__(
        self,
        tmp_path: Path,
        sequence: str,
        *,
        guards: tuple[Any, ...] = (),
        ecs: RecordedEcs | None = None,
        **config: Any,
    ) -> None:
        self.ecs = ecs or RecordedEcs(sequence)
        self.clock = FakeClock()
        self.base = Harness(make_loaded(tmp_path))
        self.store = self.base.store

        def opener(settings: PlatformConfig, environment: str, *, clock: Clock) -> Any:
            return EcsPlatform(settings.for_environment(environment), self.ecs, clock=clock)

        self.opener = opener

        self.deployer = self.base.make_deployer(
            _loaded(tmp_path, **config), platforms=opener, clock=self.clock, guards=guards
        )

    async def drive(self, work: Awaitable[DeploymentRecord]) -> DeploymentRecord:
        """Run `work`, moving the fake clock to each wake-up (bounded)."""
        task = asyncio.ensure_future(work)
        for _ in range(500):
            await self.clock.settle()
            if task.done():
                return task.result()
            wake = self.clock.next_wake()
            if wake is not None:
                await self.clock.advance(max(0.0, wake - self.clock.monotonic()))
        task.cancel()
        raise AssertionError("the deployment did not end within 500 clock steps")

    async def deploy(self, revision: str = "r1") -> DeploymentRecord:
        return await self.drive(self.deployer.deploy(DeployRequest("ai", "prod", revision, "t")))

    def events(self, record: DeploymentRecord, kind: EventKind | None = None) -> list[Any]:
        return [e for e in self.store.event_log[record.id] if kind is None or e.kind is kind]

    def messages(self, record: DeploymentRecord) -> list[str]:
        return [e.message for e in self.events(record)]


async def test_success_registers_only_the_image_and_follows_our_deployment(tmp_path: Path) -> None:
    """Calls in order; the register input is the whitelist (no read-only field), tags back,
    only `app`'s image changed; the breaker is on; success = our id COMPLETED; each new service
    event recorded once with ECS's timestamp; the derived timeout said up front."""
    h = EcsHarness(tmp_path, "success")
    record = await h.deploy()
    assert record.state is DeploymentState.SUCCEEDED, record.reason
    assert [op for op, _ in h.ecs.calls[:4]] == [
        "describe_services",
        "describe_services",
        "describe_task_definition",
        "register_task_definition",
    ]
    assert h.ecs.calls[2][1] == {"taskDefinition": OLD, "include": ["TAGS"]}
    (_, payload), *_ = h.ecs.ops("register_task_definition")
    assert not READ_ONLY & set(payload)
    before = _load("task_definition.json")
    assert payload["tags"] == before["tags"]
    expected = {k: v for k, v in before["taskDefinition"].items() if k not in READ_ONLY}
    expected["containerDefinitions"][0]["image"] = IMAGE
    assert payload == {**expected, "tags": before["tags"]}
    updates = h.ecs.ops("update_service")
    assert len(updates) == 1
    assert updates[0][1]["taskDefinition"] == f"{FAMILY}:4"
    assert updates[0][1]["deploymentConfiguration"] == {
        "deploymentCircuitBreaker": {"enable": True, "rollback": True}
    }
    ecs_events = [e for e in h.events(record) if "ecs_event" in e.data]
    assert [e.data["ecs_event"] for e in ecs_events] == ["e-2", "e-3", "e-4", "e-5"]
    assert ecs_events[0].at == datetime.fromisoformat("2026-12-01T01:00:05+00:00").timestamp()
    following = next(e for e in h.events(record) if "budget" in e.data)
    assert following.data["timeout"] == 300.0
    assert "300 s = 120 start + 1 x (60 grace + 60 health + 30 deregistration + 30 stop)" in (
        following.message
    )
    assert following.data["task_definition"] == f"{FAMILY}:4"


async def test_circuit_breaker_ends_rolled_back_naming_it_with_the_service_on_n(
    tmp_path: Path,
) -> None:
    """Our id FAILED by the breaker: rolled_back, the reason names the breaker and ECS's
    words, update_service goes back to the recorded ARN (ai:3), nothing is deregistered."""
    h = EcsHarness(tmp_path, "circuit_breaker")
    record = await h.deploy()
    assert record.state is DeploymentState.ROLLED_BACK
    assert (record.reason or "").startswith(f"ECS deployment {OURS} failed: ECS deployment circ")
    assert "tasks failed to start" in (record.reason or "")
    assert "rolled back to gaekdam-ai:3 (trigger: circuit breaker)" in (record.reason or "")
    updates = [p["taskDefinition"] for _, p in h.ecs.ops("update_service")]
    assert updates == [f"{FAMILY}:4", OLD]
    assert h.ecs.service["taskDefinition"] == OLD
    assert not h.ecs.ops("deregister_task_definition")
    (started,) = h.events(record, EventKind.ROLLBACK_STARTED)
    assert started.data["trigger"] == "circuit breaker"
    assert started.data["to_task_definition"] == OLD
    assert [e.data["ecs_event"] for e in h.events(record) if "ecs_event" in e.data] == [
        "e-2",
        "e-3",
        "e-4",
    ]


async def test_our_deployment_vanishing_is_a_rollback_by_ecs_not_a_success(tmp_path: Path) -> None:
    """The service is stable again, but on another deployment: that is a failure; ECS already
    put ai:3 back, so zerodown makes no second update."""
    h = EcsHarness(tmp_path, "vanished")
    record = await h.deploy()
    assert record.state is DeploymentState.ROLLED_BACK
    assert f"ECS deployment {OURS} is gone" in (record.reason or "")
    assert "(trigger: ecs rollback)" in (record.reason or "")
    assert [p["taskDefinition"] for _, p in h.ecs.ops("update_service")] == [f"{FAMILY}:4"]
    (finished,) = h.events(record, EventKind.ROLLBACK_FINISHED)
    assert "ECS had rolled back already" in finished.message


async def test_stuck_in_progress_times_out_at_the_derived_timeout_and_rolls_back(
    tmp_path: Path,
) -> None:
    """IN_PROGRESS forever: the deployment gives up after the derived 300 s (not a fixed
    10 min), then rolls back to the recorded ARN."""
    h = EcsHarness(tmp_path, "stuck")
    started = h.clock.monotonic()
    record = await h.deploy()
    waited = h.clock.monotonic() - started
    assert record.state is DeploymentState.ROLLED_BACK
    assert (record.reason or "").startswith(f"ECS deployment {OURS} did not complete within 300 s")
    assert "(trigger: timeout)" in (record.reason or "")
    assert 300.0 <= waited <= 310.0
    assert [p["taskDefinition"] for _, p in h.ecs.ops("update_service")] == [f"{FAMILY}:4", OLD]


async def test_throttled_polls_back_off_and_the_rollout_still_completes(tmp_path: Path) -> None:
    """Two throttled DescribeServices (after botocore's own retries): the next looks come
    20 s and 40 s later, each recorded; then our id COMPLETED."""
    h = EcsHarness(tmp_path, "throttled")
    record = await h.deploy()
    assert record.state is DeploymentState.SUCCEEDED, record.reason
    throttled = [e.data["interval"] for e in h.events(record) if e.data.get("throttled")]
    assert throttled == [20.0, 40.0]


async def test_abort_stops_following_and_rolls_back_naming_the_user(tmp_path: Path) -> None:
    """`abort` while ECS is IN_PROGRESS (the fake clock stands still: the follower waits for
    its next look): update_service back to ai:3, trigger user."""
    h = EcsHarness(tmp_path, "stuck")
    task = asyncio.ensure_future(h.deployer.deploy(DeployRequest("ai", "prod", "r1", "t")))
    for _ in range(100):
        await h.clock.settle()
        if h.ecs.ops("update_service"):
            break
    assert h.ecs.ops("update_service")
    h.deployer.abort(reason="aborted by a user")
    record = await asyncio.wait_for(task, 10)
    assert record.state is DeploymentState.ROLLED_BACK
    assert "aborted by a user" in (record.reason or "")
    assert "(trigger: user)" in (record.reason or "")
    assert [p["taskDefinition"] for _, p in h.ecs.ops("update_service")] == [f"{FAMILY}:4", OLD]


async def test_zerodown_rollback_returns_to_the_recorded_arn_without_registering(
    tmp_path: Path,
) -> None:
    """r1 -> ai:4, r2 -> ai:5; `rollback` deploys r1 by updating the service to ai:4, the ARN
    r1's deployment recorded, and registers nothing."""
    h = EcsHarness(tmp_path, "success")
    assert (await h.deploy("r1")).state is DeploymentState.SUCCEEDED
    assert (await h.deploy("r2")).state is DeploymentState.SUCCEEDED
    registered = len(h.ecs.ops("register_task_definition"))
    record = await h.drive(h.deployer.rollback("ai", "prod", actor="t"))
    assert record.state is DeploymentState.SUCCEEDED, record.reason
    assert record.kind == "rollback" and record.revision == "r1"
    assert len(h.ecs.ops("register_task_definition")) == registered == 2
    assert h.ecs.ops("update_service")[-1][1]["taskDefinition"] == f"{FAMILY}:4"
    assert h.ecs.service["taskDefinition"] == f"{FAMILY}:4"


async def test_a_tag_or_no_image_is_refused_before_anything_changes(tmp_path: Path) -> None:
    """No build, no `platform.image`, a revision that is not repo@sha256: failed, nothing
    registered or updated, and the sentence says what to write."""
    h = EcsHarness(tmp_path, "success", image=None)
    record = await h.deploy("registry.example/ai:latest")
    assert record.state is DeploymentState.FAILED
    assert "repo@sha256:" in (record.reason or "")
    assert (record.reason or "").endswith("nothing was changed")
    assert not h.ecs.ops("register_task_definition", "update_service")


async def test_a_digest_revision_is_the_image_when_the_service_builds_none(tmp_path: Path) -> None:
    """`--revision repo@sha256:...` of a service without build or platform.image deploys it."""
    h = EcsHarness(tmp_path, "success", image=None)
    record = await h.deploy(IMAGE)
    assert record.state is DeploymentState.SUCCEEDED, record.reason
    (_, payload), *_ = h.ecs.ops("register_task_definition")
    assert payload["containerDefinitions"][0]["image"] == IMAGE


@pytest.mark.parametrize("auto_rollback", [False])
async def test_auto_rollback_off_leaves_a_timed_out_rollout_alone(
    tmp_path: Path, auto_rollback: bool
) -> None:
    """auto_rollback off and ECS did not roll back: failed, no second update_service."""
    h = EcsHarness(tmp_path, "stuck", auto_rollback=auto_rollback)
    record = await h.deploy()
    assert record.state is DeploymentState.FAILED
    assert "auto_rollback is off" in (record.reason or "")
    assert len(h.ecs.ops("update_service")) == 1


class AlarmAfterUpdate:
    """A deployment guard (the alarms' seam) that fires once ECS was updated."""

    def __init__(self, ecs: RecordedEcs) -> None:
        self.ecs = ecs

    async def watch(self, ctx: DeploymentContext) -> None:
        await self.ecs.updated.wait()
        raise AlarmTriggered(
            "alarm HighErrorRate went to ALARM: 5xx > 10 in 5 min", alarm="HighErrorRate"
        )


async def test_an_alarm_during_the_rollout_rolls_ecs_back_naming_the_alarm(
    tmp_path: Path,
) -> None:
    """A guard's AlarmTriggered cancels the follow and puts the service back on ai:3; the
    record's trigger is the alarm."""
    ecs = RecordedEcs("stuck")
    h = EcsHarness(tmp_path, "stuck", guards=(AlarmAfterUpdate(ecs),), ecs=ecs)
    record = await h.deploy()
    assert record.state is DeploymentState.ROLLED_BACK
    assert (record.reason or "").startswith("alarm HighErrorRate went to ALARM")
    assert "(trigger: alarm)" in (record.reason or "")
    assert [p["taskDefinition"] for _, p in h.ecs.ops("update_service")] == [f"{FAMILY}:4", OLD]


async def _recover_crashed(h: EcsHarness, *, updated: bool, frame: int) -> DeploymentRecord:
    """A deployment left in_progress by a dead process (pid 2**22 + 1 never runs), with the
    events it recorded before dying; ECS as it was left; then a control plane's recovery."""
    record = DeploymentRecord(
        id="c" * 32,
        service="ai",
        environment="prod",
        revision="r1",
        strategy="rolling",
        state=DeploymentState.IN_PROGRESS,
        actor="t",
        created_at=h.clock.time(),
        holder_pid=2**22 + 1,
    )
    await h.store.create_deployment(record)
    data: list[dict[str, Any]] = [{"platform": "ecs", "rollback_task_definition": OLD}]
    if updated:
        data.append({"platform": "ecs", "ecs_deployment": OURS, "task_definition": f"{FAMILY}:4"})
        h.ecs.service["taskDefinition"] = f"{FAMILY}:4"
        h.ecs.frame = frame
    for item in data:
        await h.store.record_event(DeploymentEvent(record.id, EventKind.DECISION, "ecs", item))
    loaded = h.deployer.loaded
    base = h.base
    work = recover_unfinished(
        loaded, base.runtime, base.router, h.store, platforms=h.opener, clock=h.clock
    )
    (ended,) = await asyncio.wait_for(work, 10)
    return ended


async def test_recovery_after_a_crash_completes_a_deployment_ecs_completed(tmp_path: Path) -> None:
    """Our recorded deployment is COMPLETED when the next control plane looks: succeeded, no
    update_service, no local instance started."""
    h = EcsHarness(tmp_path, "success")
    ended = await _recover_crashed(h, updated=True, frame=2)
    assert ended.state is DeploymentState.SUCCEEDED
    assert ended.reason == "completed after a control-plane crash"
    assert not h.ecs.ops("update_service") and h.base.runtime.running() == []


async def test_recovery_after_a_crash_rolls_an_unfinished_rollout_back(tmp_path: Path) -> None:
    """Still IN_PROGRESS: update_service back to the recorded ai:3, naming the crash."""
    h = EcsHarness(tmp_path, "stuck")
    ended = await _recover_crashed(h, updated=True, frame=0)
    assert ended.state is DeploymentState.ROLLED_BACK
    assert "control plane crashed" in (ended.reason or "")
    assert "(trigger: control-plane crash)" in (ended.reason or "")
    assert [p["taskDefinition"] for _, p in h.ecs.ops("update_service")] == [OLD]
    assert h.base.runtime.running() == []


async def test_recovery_of_a_deployment_that_never_updated_ecs_fails_it(tmp_path: Path) -> None:
    """Crashed before update_service: failed, saying ECS was not changed; nothing is called
    to change it."""
    h = EcsHarness(tmp_path, "stuck")
    ended = await _recover_crashed(h, updated=False, frame=0)
    assert ended.state is DeploymentState.FAILED
    assert (ended.reason or "").endswith("ECS was not changed")
    assert not h.ecs.ops("update_service", "register_task_definition")


async def test_service_deployments_api_success_is_followed_where_the_endpoint_has_it(
    tmp_path: Path,
) -> None:
    """DescribeServices stays IN_PROGRESS; ServiceDeployments finds ours by its target
    revision's task definition (not the other one listed) and says SUCCESSFUL: succeeded."""
    h = EcsHarness(tmp_path, "service_deployments_success")
    record = await h.deploy()
    assert record.state is DeploymentState.SUCCEEDED, record.reason
    assert "ecs: following the ServiceDeployments API too" in h.messages(record)
    (_, listed), *_ = h.ecs.ops("list_service_deployments")
    assert listed["cluster"] == "gaekdam" and "after" in listed["createdAt"]
    assert len(h.ecs.ops("describe_service_deployments")) == 2


async def test_service_deployments_rollback_names_the_circuit_breaker(tmp_path: Path) -> None:
    """ROLLBACK_IN_PROGRESS with the breaker TRIGGERED: rolled back, trigger circuit breaker,
    ECS's statusReason in the record."""
    h = EcsHarness(tmp_path, "service_deployments_circuit_breaker")
    record = await h.deploy()
    assert record.state is DeploymentState.ROLLED_BACK
    assert "ROLLBACK_IN_PROGRESS: Service deployment rolled back" in (record.reason or "")
    assert "(trigger: circuit breaker)" in (record.reason or "")


async def test_without_the_api_describe_services_alone_is_followed_and_said(
    tmp_path: Path,
) -> None:
    """An endpoint that refuses ListServiceDeployments (moto): asked once, said once."""
    h = EcsHarness(tmp_path, "success")
    record = await h.deploy()
    assert record.state is DeploymentState.SUCCEEDED
    assert len(h.ecs.ops("list_service_deployments")) == 1
    notices = [m for m in h.messages(record) if "no ServiceDeployments API" in m]
    assert len(notices) == 1


async def test_a_strategy_ecs_does_not_run_is_refused_before_anything_changes(
    tmp_path: Path,
) -> None:
    """blue-green on an ECS service: failed, saying to use rolling; ECS untouched."""
    h = EcsHarness(tmp_path, "success", strategy="blue-green")
    record = await h.deploy()
    assert record.state is DeploymentState.FAILED
    assert "asks for a blue-green deployment" in (record.reason or "")
    assert "strategy: {type: rolling}" in (record.reason or "")
    assert h.ecs.calls == []
