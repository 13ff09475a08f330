"""Router backends by the name `router.backend` gives them in zerodown.yml, imported only
when used: nothing outside a backend's own package names its classes."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, cast

from zerodown.errors import ConfigError

if TYPE_CHECKING:
    from zerodown.config.router import BuiltinRouterConfig, HaproxyRouterConfig
    from zerodown.routers.base import RouterBackend

ROUTER_BACKENDS: dict[str, str] = {
    "builtin": "zerodown.routers.builtin.backend",
    "haproxy": "zerodown.routers.haproxy.backend",
}


def router_backend(settings: BuiltinRouterConfig | HaproxyRouterConfig) -> RouterBackend:
    """The backend `settings.backend` names, built from its own settings."""
    module_name = ROUTER_BACKENDS.get(settings.backend)
    if module_name is None:  # the config model only admits known names: a bug if reached
        known = ", ".join(sorted(ROUTER_BACKENDS))
        raise ConfigError(f"unknown router backend {settings.backend!r}: use {known}")
    module = importlib.import_module(module_name)
    return cast("RouterBackend", module.backend(settings))
