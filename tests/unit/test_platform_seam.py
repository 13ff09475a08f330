"""The Platform seam in the Deployer: a service with `platform:` is rolled out and failed by its
platform, with the same record, states, lock and abort as the engine path; config checks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import ValidationError
from tests.unit.fakes import Harness, make_loaded

from zerodown.clock import Clock
from zerodown.config.loader import LoadedConfig
from zerodown.config.model import ZerodownConfig
from zerodown.config.platform import PlatformConfig
from zerodown.domain.events import DeploymentState, EventKind
from zerodown.engine.deployer import DeployRequest
from zerodown.engine.run import DeploymentRun
from zerodown.errors import DeploymentAborted, PlatformError
from zerodown.platforms.base import ManagedPlatform

DIGEST = "registry.example/ai@sha256:" + "a" * 64
ECS = {"kind": "ecs", "cluster": "gaekdam", "service": "ai", "container": "app", "image": DIGEST}


class ScriptedPlatform:
    """A managed platform whose rollout succeeds, fails, or waits until cancelled."""

    kind = "scripted"

    def __init__(self, outcome: str) -> None:
        self.outcome = outcome
        self.started = asyncio.Event()
        self.failed: list[tuple[str, BaseException]] = []

    async def roll_out(self, run: DeploymentRun) -> None:
        await run.emit(EventKind.DECISION, "scripted: rolling out", {"platform": "scripted"})
        self.started.set()
        if self.outcome == "fail":
            raise PlatformError("the platform said no")
        if self.outcome == "hang":
            await asyncio.Event().wait()

    async def fail(self, run: DeploymentRun, reason: str, cause: BaseException) -> None:
        self.failed.append((reason, cause))
        await run.transition(DeploymentState.ROLLING_BACK, reason=reason)
        await run.transition(DeploymentState.ROLLED_BACK, reason=f"{reason}; scripted rollback")

    async def recover(self, run: DeploymentRun, reason: str) -> None:
        await run.transition(DeploymentState.FAILED, reason=reason)


def _loaded(tmp_path: Path) -> LoadedConfig:
    data = {
        "state_dir": str(tmp_path / "state"),
        "services": {"ai": {"platform": ECS}},
        "environments": {"prod": {}},
    }
    return LoadedConfig(ZerodownConfig.model_validate(data), tmp_path / "zerodown.yml", tmp_path)


def _harness(tmp_path: Path, platform: ScriptedPlatform) -> tuple[Harness, list[str]]:
    harness = Harness(make_loaded(tmp_path))
    opened: list[str] = []

    def opener(settings: PlatformConfig, environment: str, *, clock: Clock) -> ManagedPlatform:
        opened.append(f"{settings.kind}:{settings.cluster}/{settings.service}@{environment}")
        return platform

    harness.deployer = harness.make_deployer(_loaded(tmp_path), platforms=opener)
    return harness, opened


def _states(harness: Harness, deployment_id: str) -> list[str]:
    return [e.data["to"] for e in harness.store.event_log[deployment_id] if e.kind.value == "state"]


async def test_a_service_with_a_platform_is_rolled_out_by_it_and_recorded_the_same_way(
    tmp_path: Path,
) -> None:
    """The opener gets the service's platform settings and environment; the record goes
    in_progress -> succeeded with the platform's events; no instance is started; lock freed."""
    platform = ScriptedPlatform("ok")
    harness, opened = _harness(tmp_path, platform)
    record = await harness.deployer.deploy(DeployRequest("ai", "prod", "r1", "test"))
    assert opened == ["ecs:gaekdam/ai@prod"]
    assert record.state is DeploymentState.SUCCEEDED
    assert _states(harness, record.id) == ["in_progress", "succeeded"]
    assert "scripted: rolling out" in [e.message for e in harness.store.event_log[record.id]]
    assert harness.runtime.running() == [] and harness.store.locks == {}


async def test_a_failed_rollout_goes_through_the_platforms_failure_path(tmp_path: Path) -> None:
    """The platform's fail() gets the reason and the exception; its terminal state is kept."""
    platform = ScriptedPlatform("fail")
    harness, _ = _harness(tmp_path, platform)
    record = await harness.deployer.deploy(DeployRequest("ai", "prod", "r1", "test"))
    assert record.state is DeploymentState.ROLLED_BACK
    assert record.reason == "the platform said no; scripted rollback"
    assert [(r, type(c)) for r, c in platform.failed] == [("the platform said no", PlatformError)]


async def test_abort_stops_the_rollout_and_hands_the_user_as_the_cause(tmp_path: Path) -> None:
    """`abort` cancels the platform's rollout and its fail() is told a user aborted it."""
    platform = ScriptedPlatform("hang")
    harness, _ = _harness(tmp_path, platform)
    work = asyncio.ensure_future(harness.deployer.deploy(DeployRequest("ai", "prod", "r1", "t")))
    await asyncio.wait_for(platform.started.wait(), 5)
    harness.deployer.abort(reason="aborted by a user")
    record = await asyncio.wait_for(work, 5)
    assert record.state is DeploymentState.ROLLED_BACK
    (reason, cause), *_ = platform.failed
    assert reason == "aborted by a user" and isinstance(cause, DeploymentAborted)


def test_a_platform_service_needs_no_run_command_but_a_tag_is_refused() -> None:
    """`run:` is not needed on a platform; `platform.image` must be pinned by digest."""
    ZerodownConfig.model_validate({"services": {"ai": {"platform": ECS}}})
    with pytest.raises(ValidationError) as caught:
        ZerodownConfig.model_validate(
            {"services": {"ai": {"platform": {**ECS, "image": "registry.example/ai:latest"}}}}
        )
    assert "not pinned by digest" in str(caught.value) and "repo@sha256:" in str(caught.value)


def test_per_environment_overrides_change_only_what_they_name() -> None:
    """`environments: {dev: {cluster: ...}}` switches the cluster for dev only."""
    settings = PlatformConfig.model_validate({**ECS, "environments": {"dev": {"cluster": "dev"}}})
    assert settings.for_environment("dev").cluster == "dev"
    assert settings.for_environment("dev").service == "ai"
    assert settings.for_environment("prod").cluster == "gaekdam"
