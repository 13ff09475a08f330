"""SecretsEnvSource: secrets reach instances and hooks, the masker learns them first, no event
carries a value; plus the `secrets:` config and the supervisor's view of what to mask."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import ValidationError
from tests.unit.fakes import Harness, make_loaded

from zerodown.config.secrets import SecretSourceConfig
from zerodown.domain.events import DeploymentState, EventKind
from zerodown.domain.records import LockHolder
from zerodown.engine.recovery import recover_unfinished
from zerodown.errors import SecretsError
from zerodown.runtimes.base import InstanceInfo, InstanceSpec
from zerodown.runtimes.local.supervisor import APP_ENV_PREFIX, SpecRecord, secret_values
from zerodown.secrets.base import SecretStore, variable_name
from zerodown.secrets.env_source import SecretsEnvSource
from zerodown.secrets.local import KEY_ENV, LocalSecretStore, new_key
from zerodown.secrets.masking import SECRET_NAMES_ENV, SecretMasker

SECRET = "s3cr3t-db-password-42"


class BrokenStore:
    """A SecretStore whose backend is down."""

    def describe(self, environment: str) -> str:
        return "broken"

    async def values(self, environment: str) -> dict[str, str]:
        raise SecretsError("cannot read /app/prod/: AWS did not answer; check the network")


async def test_secrets_reach_instances_and_hooks_and_every_event_is_masked(tmp_path: Path) -> None:
    environ = {KEY_ENV: new_key()}
    state = tmp_path / "state"
    local = LocalSecretStore(state / "secrets.enc.json", key_file=state / "k", environ=environ)
    await local.set("prod", "DB_PASSWORD", SECRET)
    loaded = make_loaded(tmp_path, hooks={"AfterInstall": 'echo "hook sees $DB_PASSWORD"'})
    masker = SecretMasker()
    source = SecretsEnvSource(state, tmp_path, masker=masker, opener=lambda config: local)
    harness = Harness(loaded)
    harness.deployer = harness.make_deployer(loaded, env_sources=[source], masker=masker)
    specs: list[InstanceSpec] = []
    start = harness.runtime.start

    async def recording_start(spec: InstanceSpec) -> InstanceInfo:
        specs.append(spec)
        return await start(spec)

    harness.runtime.start = recording_start  # type: ignore[method-assign]
    record = await harness.deploy("v1")
    assert record.state is DeploymentState.SUCCEEDED
    assert specs and all(spec.env["DB_PASSWORD"] == SECRET for spec in specs)
    assert all(spec.env[SECRET_NAMES_ENV] == "DB_PASSWORD" for spec in specs)
    events = harness.store.event_log[record.id]
    assert any(e.kind is EventKind.HOOK_OUTPUT and e.message == "hook sees ****" for e in events)
    assert any(e.kind is EventKind.DECISION and "DB_PASSWORD" in e.message for e in events)
    assert all(SECRET not in f"{e.message} {e.data}" for e in events)


async def test_a_failing_secret_store_fails_the_deployment_before_anything_changes(
    tmp_path: Path,
) -> None:
    loaded = make_loaded(tmp_path)
    broken: SecretStore = BrokenStore()  # type: ignore[assignment]  # values() is all it needs
    source = SecretsEnvSource(tmp_path, tmp_path, opener=lambda config: broken)
    harness = Harness(loaded)
    harness.deployer = harness.make_deployer(loaded, env_sources=[source])
    record = await harness.deploy("v1")
    assert record.state is DeploymentState.FAILED
    assert record.reason and "AWS did not answer" in record.reason
    assert not harness.runtime.running()


def test_secret_source_config_checks_each_backend_fields() -> None:
    assert SecretSourceConfig().backend == "local"
    ssm = SecretSourceConfig(backend="ssm", path="/tpt-api/{environment}")
    assert ssm.resolved_path("prod") == "/tpt-api/prod/"
    with pytest.raises(ValidationError, match="needs `path:`"):
        SecretSourceConfig(backend="ssm")
    with pytest.raises(ValidationError, match="needs `secret_id:`"):
        SecretSourceConfig(backend="secretsmanager")
    with pytest.raises(ValidationError, match="is for backend ssm"):
        SecretSourceConfig(backend="local", path="/x/")


def test_variable_names_come_from_the_last_path_segment() -> None:
    assert variable_name("db-password") == "DB_PASSWORD"
    assert variable_name("spring.datasource.url", "APP_") == "APP_SPRING_DATASOURCE_URL"
    assert variable_name("1st") == "_1ST"


def test_the_supervisor_masks_only_the_variables_named_secret() -> None:
    record = SpecRecord(
        service="api",
        revision="abc",
        instance_id="api-1",
        command="true",
        workdir=".",
        env_names=["DB_PASSWORD", "LOG_LEVEL", SECRET_NAMES_ENV],
        port_env="PORT",
        host="127.0.0.1",
        port=8000,
        stop_timeout=1.0,
        memory_limit=None,
        restart="no",
        labels={},
    )
    environ = {
        APP_ENV_PREFIX + "DB_PASSWORD": SECRET,
        APP_ENV_PREFIX + "LOG_LEVEL": "debug",
        APP_ENV_PREFIX + SECRET_NAMES_ENV: "DB_PASSWORD",
    }
    assert secret_values(record, environ) == [SECRET]


async def test_a_failed_hook_that_prints_a_secret_leaves_a_masked_reason(tmp_path: Path) -> None:
    state = tmp_path / "state"
    local = LocalSecretStore(state / "s.json", key_file=state / "k", environ={KEY_ENV: new_key()})
    await local.set("prod", "DB_PASSWORD", SECRET)
    loaded = make_loaded(
        tmp_path, hooks={"AfterInstall": 'echo "cannot log in with $DB_PASSWORD"; exit 3'}
    )
    masker = SecretMasker()
    source = SecretsEnvSource(state, tmp_path, masker=masker, opener=lambda config: local)
    harness = Harness(loaded)
    harness.deployer = harness.make_deployer(loaded, env_sources=[source], masker=masker)
    record = await harness.deploy("v1")
    assert record.state is DeploymentState.FAILED
    assert record.reason and "cannot log in with ****" in record.reason
    assert SECRET not in str(harness.store.records)


class StaticSecrets:
    """An EnvSource with one secret (what SecretsEnvSource returns, without a store)."""

    async def environment(self, ctx: object) -> dict[str, str]:
        return {"DB_PASSWORD": SECRET}


async def test_instances_restored_by_crash_recovery_get_their_secrets(tmp_path: Path) -> None:
    # all-at-once: v1 is already stopped when the process dies, so recovery starts it again
    harness = Harness(make_loaded(tmp_path, strategy={"type": "all-at-once"}))
    assert (await harness.deploy("v1")).state is DeploymentState.SUCCEEDED
    harness.prober.gates["v2"] = asyncio.Event()
    task = asyncio.ensure_future(harness.deploy("v2"))
    await asyncio.wait_for(harness.prober.waiting.wait(), 5)
    record = (await harness.store.list_deployments())[0]
    frozen, frozen_lock = dict(harness.store.records), dict(harness.store.locks)
    task.cancel()  # the deploy process "dies" with its v2 instance half-started
    with pytest.raises(asyncio.CancelledError):
        await task
    harness.store.records = frozen
    dead = next(iter(frozen_lock.values()))
    harness.store.locks = {("api", "prod"): LockHolder(dead.deployment_id, -1, 0, "h", 0.0)}
    harness.store.records[record.id] = replace(record, holder_pid=2**22 + 12345)
    harness.prober.gates.clear()
    specs: list[InstanceSpec] = []
    start = harness.runtime.start

    async def recording_start(spec: InstanceSpec) -> InstanceInfo:
        specs.append(spec)
        return await start(spec)

    harness.runtime.start = recording_start  # type: ignore[method-assign]
    ended = await recover_unfinished(
        harness.loaded,
        harness.runtime,
        harness.router,
        harness.store,
        prober=harness.prober,
        env_sources=[StaticSecrets()],
    )
    assert [r.state for r in ended] == [DeploymentState.ROLLED_BACK]
    assert specs and all(s.revision == "v1" and s.env["DB_PASSWORD"] == SECRET for s in specs)
