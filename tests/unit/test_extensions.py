"""Extension points of a deployment: env sources reach instances, a tripped guard or a failed
verifier rolls the fleet back, and the masker keeps secrets out of every recorded event."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

from tests.unit.fakes import Harness, make_loaded

from zerodown.domain.events import DeploymentState
from zerodown.engine.deployer import DeployRequest
from zerodown.engine.extensions import DeploymentContext
from zerodown.errors import HealthCheckFailed, ZerodownError
from zerodown.runtimes.base import InstanceInfo, InstanceSpec

SECRET = "s3cr3t-value-42"


class SecretEnv:
    async def environment(self, ctx: DeploymentContext) -> Mapping[str, str]:
        return {"DB_PASSWORD": SECRET}


class SecretMasker:
    def mask(self, text: str) -> str:
        return text.replace(SECRET, "****")


class TrippingGuard:
    """Trips as soon as the new revision has an instance running."""

    async def watch(self, ctx: DeploymentContext) -> None:
        for _ in range(1000):
            if await ctx.new_instances():
                raise ZerodownError("alarm HighErrorRate is in ALARM: 5xx count 12 > 10")
            await asyncio.sleep(0.005)


class FailingVerifier:
    def __init__(self) -> None:
        self.saw: list[str] = []

    async def verify(self, ctx: DeploymentContext) -> None:
        self.saw.append(ctx.record.revision)
        raise HealthCheckFailed(f"smoke check GET /login: want 200, got 500 ({SECRET})")


async def _on_v1(tmp_path: Path, **extensions: object) -> Harness:
    harness = Harness(make_loaded(tmp_path, instances=2))
    assert (await harness.deploy("v1")).state is DeploymentState.SUCCEEDED
    harness.deployer = harness.make_deployer(harness.loaded, **extensions)
    return harness


async def test_env_sources_reach_every_new_instance(tmp_path: Path) -> None:
    harness = await _on_v1(tmp_path, env_sources=[SecretEnv()])
    specs: list[InstanceSpec] = []
    start = harness.runtime.start

    async def recording_start(spec: InstanceSpec) -> InstanceInfo:
        specs.append(spec)
        return await start(spec)

    harness.runtime.start = recording_start  # type: ignore[method-assign]
    record = await harness.deploy("v2")
    assert record.state is DeploymentState.SUCCEEDED
    assert specs and all(spec.env["DB_PASSWORD"] == SECRET for spec in specs)


async def test_a_tripped_guard_rolls_the_fleet_back_with_its_reason(tmp_path: Path) -> None:
    harness = await _on_v1(tmp_path, guards=[TrippingGuard()])
    start = harness.runtime.start

    async def slow_start(spec: InstanceSpec) -> InstanceInfo:
        info = await start(spec)
        await asyncio.sleep(0.05)  # the fakes are instant; give the guard a moment to look
        return info

    harness.runtime.start = slow_start  # type: ignore[method-assign]
    record = await harness.deploy("v2")
    assert record.state is DeploymentState.ROLLED_BACK
    assert "HighErrorRate" in (record.reason or "")
    assert harness.running_revisions() == ["v1", "v1"]
    assert harness.serving_revisions() == ["v1", "v1"]


async def test_a_failed_verifier_rolls_back_and_the_masker_hides_the_secret(
    tmp_path: Path,
) -> None:
    verifier = FailingVerifier()
    harness = await _on_v1(tmp_path, verifiers=[verifier], masker=SecretMasker())
    record = await harness.deployer.deploy(DeployRequest("api", "prod", "v2", "test"))
    assert verifier.saw == ["v2"]
    assert record.state is DeploymentState.ROLLED_BACK
    assert harness.running_revisions() == ["v1", "v1"]
    events = harness.store.event_log[record.id]
    assert any("smoke check" in e.message for e in events)
    assert not any(SECRET in e.message or SECRET in repr(e.data) for e in events)
