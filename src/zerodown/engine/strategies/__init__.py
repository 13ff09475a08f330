"""Deployment strategies: all-at-once, rolling (with or without surge), CodeDeploy-style in-place,
blue-green (preview, atomic switch, warm rollback window) and canary (weighted steps + analysis).

Importing the package registers every built-in strategy; `strategy_for` picks one by
`StrategyConfig.type`.
"""

from zerodown.engine.strategies import all_at_once, blue_green, canary, in_place, rolling
from zerodown.engine.strategies.base import Strategy, StrategyContext, strategy_for

__all__ = [
    "Strategy",
    "StrategyContext",
    "all_at_once",
    "blue_green",
    "canary",
    "in_place",
    "rolling",
    "strategy_for",
]
