"""`runtime:` in zerodown.yml: one settings model per runtime backend, chosen by `backend:`.

Each backend's implementation is imported only when it is used (`zerodown.runtimes.registry`).
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from zerodown.config.ssh import SshRuntimeConfig
from zerodown.config.units import Duration

DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"


def default_docker_url() -> str:
    """DOCKER_HOST, as the docker CLI reads it, else the Docker daemon's usual socket."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_URL


class _RuntimeBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocalRuntimeConfig(_RuntimeBase):
    """Processes on this machine, each under a detached supervisor (the default)."""

    backend: Literal["local"] = Field(
        "local", description="Runtime backend: local (processes under a supervisor each)."
    )


class DockerRuntimeConfig(_RuntimeBase):
    """Containers through the Docker Engine API (Docker, or Podman's `podman system service`).

    Each revision's image is run pinned by its manifest digest; containers carry labels that
    find them again after a control-plane restart, and the daemon supervises them.
    """

    backend: Literal["docker"] = Field(
        "docker", description="Runtime backend: docker (containers through the Docker API)."
    )
    url: str = Field(
        default_factory=default_docker_url,
        description="Docker API address: unix:///path/to.sock or tcp://host:port (default: "
        "$DOCKER_HOST, else unix:///var/run/docker.sock; Podman: the socket `podman system "
        "service` listens on).",
    )
    network: Literal["bridge", "host"] = Field(
        "bridge",
        description="bridge: the container's port is published on `publish_host` (a free port "
        "chosen by the daemon); host: the container shares the host's network and listens on "
        "a free port zerodown gives it in $PORT.",
    )
    publish_host: str = Field(
        "127.0.0.1",
        description="bridge: the host address container ports are published on (and the "
        "router reaches them at).",
    )
    container_port: int = Field(
        8000,
        ge=1,
        le=65535,
        description="bridge: the port the app listens on inside its container (given in $PORT).",
    )
    cpus: float | None = Field(
        None, gt=0, description="CPU limit per container (e.g. 0.5 or 2); none: no limit."
    )
    pull: Literal["missing", "always", "never"] = Field(
        "missing",
        description="Pull the pinned image before creating a container: missing (only if the "
        "daemon lacks it), always, never (it must be there).",
    )
    label_prefix: str = Field(
        "io.zerodown.",
        description="Prefix of the labels zerodown puts on its containers (service, "
        "environment, revision, deployment, instance) and finds them by.",
    )
    timeout: Duration = Field(
        120.0, description="Longest wait for one Docker API call (pulls included)."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("unix://", "tcp://", "http://", "https://", "ssh://")):
            raise ValueError(
                f"{value!r} is not a Docker API address: write unix:///var/run/docker.sock "
                "or tcp://host:2375"
            )
        return value

    @field_validator("label_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value or not value.endswith("."):
            raise ValueError(f"{value!r} must end with '.', e.g. io.zerodown.")
        return value


def _backend_of(value: Any) -> str:
    """The backend a `runtime:` section names; none named is the local runtime."""
    if isinstance(value, dict):
        return str(value.get("backend", "local"))
    return str(getattr(value, "backend", "local"))


RuntimeConfig = Annotated[
    Annotated[LocalRuntimeConfig, Tag("local")]
    | Annotated[DockerRuntimeConfig, Tag("docker")]
    | Annotated[SshRuntimeConfig, Tag("ssh")],
    Discriminator(
        _backend_of,
        custom_error_type="runtime_backend",
        custom_error_message="unknown runtime backend: write `backend: local`, `backend: "
        "docker` or `backend: ssh`",
    ),
]
