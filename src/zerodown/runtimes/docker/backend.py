"""The Docker runtime's entry point for the registry (`zerodown.runtimes.registry`)."""

from __future__ import annotations

from pathlib import Path

from zerodown.config.runtime import DockerRuntimeConfig, RuntimeConfig
from zerodown.errors import ConfigError
from zerodown.runtimes.docker.runtime import DockerRuntime


def runtime(settings: RuntimeConfig, state_dir: Path) -> DockerRuntime:
    """Containers through the Docker API `settings.url` names."""
    if not isinstance(settings, DockerRuntimeConfig):  # the registry maps "docker" here only
        raise ConfigError(f"the docker runtime got {settings.backend!r} settings", field="runtime")
    return DockerRuntime(settings, state_dir)
