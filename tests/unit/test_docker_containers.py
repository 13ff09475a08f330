"""What the docker runtime reads from a container's inspect data (no daemon needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zerodown.config.runtime import DockerRuntimeConfig
from zerodown.runtimes.base import InstanceState
from zerodown.runtimes.docker import containers as c
from zerodown.runtimes.registry import open_runtime

PREFIX = "io.zerodown."
SCOPE = "abc123abc123"


def attrs(status: str, exit_code: int = 0, name: str | None = None, **state: Any) -> dict[str, Any]:
    """Inspect data of instance web-1 in `status`."""
    labels = {
        PREFIX + c.SCOPE: SCOPE,
        PREFIX + c.SERVICE: "web",
        PREFIX + c.INSTANCE: "web-1",
        PREFIX + c.REVISION: "r1",
        PREFIX + c.HOST: "127.0.0.1",
        PREFIX + c.PORT: "41000",
        PREFIX + c.STOP_TIMEOUT: "7",
        PREFIX + "environment": "prod",
        "org.opencontainers.image.revision": "not ours",
    }
    return {
        "Id": "f" * 64,
        "Name": "/" + (name or c.container_name(SCOPE, "web-1")),
        "RestartCount": 2,
        "Config": {"Labels": labels, "Image": "reg/web@sha256:" + "a" * 64, "Env": ["A=b"]},
        "State": {
            "Status": status,
            "ExitCode": exit_code,
            "Pid": 4242 if status == "running" else 0,
            "StartedAt": "2026-12-02T00:15:41.927855228Z",
            **state,
        },
    }


@pytest.mark.parametrize(
    ("status", "exit_code", "extra", "expected"),
    [
        ("running", 0, {}, InstanceState.RUNNING),
        ("created", 0, {}, InstanceState.STARTING),
        ("restarting", 1, {}, InstanceState.RESTARTING),
        ("exited", 0, {}, InstanceState.STOPPED),
        ("exited", 143, {}, InstanceState.STOPPED),  # SIGTERM of a stop
        ("exited", 137, {}, InstanceState.STOPPED),  # SIGKILL after the stop timeout
        ("exited", 3, {}, InstanceState.FAILED),
        ("exited", 137, {"OOMKilled": True}, InstanceState.FAILED),
        ("dead", 0, {}, InstanceState.FAILED),
    ],
)
def test_container_states_map_to_instance_states(
    status: str, exit_code: int, extra: dict[str, Any], expected: InstanceState
) -> None:
    assert c.state_of(attrs(status, exit_code, **extra)) is expected


def test_info_names_the_instance_its_address_and_only_the_labels_the_engine_reads() -> None:
    info = c.info_of(attrs("running", Health={"Status": "healthy"}), PREFIX, SCOPE)
    assert (info.instance_id, info.service, info.revision) == ("web-1", "web", "r1")
    assert info.address == "127.0.0.1:41000"
    assert (info.pid, info.restarts, info.exit_code, info.health) == (4242, 2, None, "healthy")
    assert info.started_at == pytest.approx(1796170541.927855)
    assert info.labels == {
        "environment": "prod",
        "instance": "web-1",
        "revision": "r1",
        "service": "web",
    }
    assert info.image == "reg/web@sha256:" + "a" * 64
    assert c.stop_timeout_of(attrs("running"), PREFIX, 10.0) == 7.0


def test_a_kept_crashed_container_is_told_apart_from_a_live_instance() -> None:
    kept = attrs("exited", 3, name=c.exited_name(SCOPE, "web-1", 1_700_000_000.0))
    assert c.is_exited(kept, PREFIX, SCOPE)
    assert not c.is_exited(attrs("exited", 3), PREFIX, SCOPE)
    info = c.info_of(kept, PREFIX, SCOPE)
    assert info.labels["exited"] == "true" and info.exit_code == 3 and info.pid is None


def test_times_and_scopes() -> None:
    assert c.parse_time("0001-01-01T00:00:00Z") is None
    assert c.parse_time("2026-12-02T00:15:41+01:00") == pytest.approx(1796166941.0)
    assert c.scope_of(Path("/a")) != c.scope_of(Path("/b"))


def test_the_registry_opens_the_docker_runtime_without_touching_the_daemon(tmp_path: Path) -> None:
    runtime = open_runtime(DockerRuntimeConfig(url="unix:///nonexistent.sock"), tmp_path)
    assert runtime.name == "docker"
    assert "image" in runtime.artifacts


def test_settings_refuse_what_the_docker_api_cannot_be() -> None:
    with pytest.raises(ValueError, match="not a Docker API address"):
        DockerRuntimeConfig(url="/var/run/docker.sock")
    with pytest.raises(ValueError, match=r"must end with '\.'"):
        DockerRuntimeConfig(label_prefix="zerodown")
    assert DockerRuntimeConfig().url.startswith(("unix://", "tcp://"))


def test_a_container_this_runtime_stopped_is_stopped_whatever_its_exit_code() -> None:
    """An app may exit 1 on SIGTERM: stopped on purpose, not a crash (its output is not kept)."""
    exited = attrs("exited", 1)
    assert c.state_of(exited) is InstanceState.FAILED
    assert c.state_of(exited, {exited["Id"]}) is InstanceState.STOPPED
    assert c.info_of(exited, PREFIX, SCOPE, {exited["Id"]}).state is InstanceState.STOPPED
    oom = attrs("exited", 137, OOMKilled=True)
    assert c.state_of(oom, {oom["Id"]}) is InstanceState.FAILED  # killed for its memory
