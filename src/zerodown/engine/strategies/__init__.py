"""Deployment strategies: all-at-once, rolling (with or without surge), CodeDeploy-style in-place.

Importing the package registers every built-in strategy; `strategy_for` picks one by
`StrategyConfig.type`.
"""

from zerodown.engine.strategies import all_at_once, in_place, rolling
from zerodown.engine.strategies.base import Strategy, StrategyContext, strategy_for

__all__ = ["Strategy", "StrategyContext", "all_at_once", "in_place", "rolling", "strategy_for"]
