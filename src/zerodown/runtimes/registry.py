"""Runtime backends by the name `runtime.backend` gives them in zerodown.yml, imported only
when used: nothing outside a backend's own package names its classes."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, cast

from zerodown.errors import ConfigError

if TYPE_CHECKING:
    from zerodown.config.runtime import RuntimeConfig
    from zerodown.runtimes.base import Runtime

RUNTIME_BACKENDS: dict[str, str] = {
    "local": "zerodown.runtimes.local.backend",
    "docker": "zerodown.runtimes.docker.backend",
    "ssh": "zerodown.runtimes.ssh.backend",
}


def open_runtime(settings: RuntimeConfig, state_dir: Path) -> Runtime:
    """The runtime `settings.backend` names, keeping its state under `state_dir`."""
    module_name = RUNTIME_BACKENDS.get(settings.backend)
    if module_name is None:  # the config model only admits known names: a bug if reached
        known = ", ".join(sorted(RUNTIME_BACKENDS))
        raise ConfigError(f"unknown runtime backend {settings.backend!r}: use {known}")
    module = importlib.import_module(module_name)
    return cast("Runtime", module.runtime(settings, state_dir))
