"""Platforms by the `kind` `platform:` gives them in zerodown.yml, imported only when used
(boto3 loads only for a service on ECS): nothing outside a platform's package names its class."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, cast

from zerodown.errors import ConfigError

if TYPE_CHECKING:
    from zerodown.clock import Clock
    from zerodown.config.platform import PlatformConfig
    from zerodown.platforms.base import ManagedPlatform

PLATFORMS: dict[str, str] = {
    "ecs": "zerodown.platforms.ecs.platform",
}


def open_platform(settings: PlatformConfig, environment: str, *, clock: Clock) -> ManagedPlatform:
    """The platform `settings.kind` names, for `environment`, built from its own settings."""
    module_name = PLATFORMS.get(settings.kind)
    if module_name is None:  # the config model only admits known kinds: a bug if reached
        known = ", ".join(sorted(PLATFORMS))
        raise ConfigError(f"unknown platform kind {settings.kind!r}: use {known}")
    module = importlib.import_module(module_name)
    return cast("ManagedPlatform", module.platform(settings, environment, clock=clock))
