"""The local runtime's entry point for the registry (`zerodown.runtimes.registry`)."""

from __future__ import annotations

from pathlib import Path

from zerodown.config.runtime import RuntimeConfig
from zerodown.runtimes.local.runtime import LocalRuntime


def runtime(settings: RuntimeConfig, state_dir: Path) -> LocalRuntime:
    """Processes on this machine, each under a detached supervisor."""
    del settings  # the local runtime has no settings of its own yet
    return LocalRuntime(state_dir)
