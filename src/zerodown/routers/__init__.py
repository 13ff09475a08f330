"""Routers send traffic to healthy targets. One module per backend; the engine sees `Router`."""

from zerodown.routers.base import (
    DrainResult,
    Router,
    RouteSpec,
    RouteStatus,
    TargetHealth,
    TargetSpec,
    TargetStatus,
)

__all__ = [
    "DrainResult",
    "RouteSpec",
    "RouteStatus",
    "Router",
    "TargetHealth",
    "TargetSpec",
    "TargetStatus",
]
