"""zerodown.yml: the model, its units, and the loader that points errors at lines."""

from zerodown.config.loader import LoadedConfig, find_config, load_config, parse_config
from zerodown.config.model import (
    HOOK_ORDER,
    EnvironmentConfig,
    HealthConfig,
    HookConfig,
    ServiceConfig,
    StrategyConfig,
    ZerodownConfig,
)
from zerodown.config.router import RouterConfig

__all__ = [
    "HOOK_ORDER",
    "EnvironmentConfig",
    "HealthConfig",
    "HookConfig",
    "LoadedConfig",
    "RouterConfig",
    "ServiceConfig",
    "StrategyConfig",
    "ZerodownConfig",
    "find_config",
    "load_config",
    "parse_config",
]
