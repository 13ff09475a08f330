"""The Router seam's pool rules, as every router and the engine's views apply them."""

from __future__ import annotations

import pytest

from zerodown.errors import RouterError
from zerodown.routers.base import (
    RouteSpec,
    RouteStatus,
    TargetHealth,
    TargetSpec,
    TargetStatus,
    check_pool_weights,
    pool_weight,
)
from zerodown.server.views import fleet_view


def _status(pools: dict[str, int], *targets: tuple[str, str, str, TargetHealth]) -> RouteStatus:
    return RouteStatus(
        route=RouteSpec("api.prod"),
        targets=tuple(
            TargetStatus(TargetSpec("api.prod", tid, "127.0.0.1", 1, rev, pool), health, False, 0)
            for tid, rev, pool, health in targets
        ),
        pools=pools,
    )


HEALTHY, UNHEALTHY = TargetHealth.HEALTHY, TargetHealth.UNHEALTHY


def test_a_pools_weight_is_split_among_its_healthy_targets() -> None:
    """Canary pool 10 with one target, baseline 90 with two (one of them also unhealthy):
    10, 90 and 0; the preview pool weighs nothing; without pool weights every target 100."""
    status = _status(
        {"v2-d2": 10, "v1-d1": 90},
        ("c1", "v2", "v2-d2", HEALTHY),
        ("b1", "v1", "v1-d1", HEALTHY),
        ("b2", "v1", "v1-d1", UNHEALTHY),
        ("g1", "v3", "preview", HEALTHY),
    )
    assert status.target_weights() == {"c1": 10.0, "b1": 90.0, "b2": 0.0, "g1": 0.0}
    even = _status({}, ("a", "v1", "x", HEALTHY), ("b", "v2", "y", HEALTHY))
    assert even.target_weights() == {"a": 100.0, "b": 100.0}
    assert pool_weight({}, "preview") == 0 and pool_weight({"x": 5}, "y") == 0


def test_the_dashboard_sees_each_targets_share_so_revisions_sum_to_their_split() -> None:
    """fleet_view's per-target weight is the target's share of its pool's: a 10 % canary with
    one instance beside two baseline instances sums to 10 : 90 per revision (not 10 : 180)."""
    from zerodown.control_plane import FleetStatus

    status = _status(
        {"v2-d2": 10, "v1-d1": 90},
        ("c1", "v2", "v2-d2", HEALTHY),
        ("b1", "v1", "v1-d1", HEALTHY),
        ("b2", "v1", "v1-d1", HEALTHY),
    )
    view = fleet_view(FleetStatus("api", "prod", status, (), None, None))
    per_revision: dict[str, float] = {}
    for target in view["targets"]:
        per_revision[target["revision"]] = (
            per_revision.get(target["revision"], 0) + target["weight"]
        )
    assert per_revision == {"v2": 10.0, "v1": 90.0}
    assert {t["instance"]: t["pool"] for t in view["targets"]}["c1"] == "v2-d2"


def test_pool_weights_are_checked_alike_by_every_router() -> None:
    """Negative weights and a weight for the preview pool are refused with a sentence."""
    assert check_pool_weights("web", {"a": 1, "b": 0}) == {"a": 1, "b": 0}
    with pytest.raises(RouterError, match=r"route 'web': pool weights must be >= 0"):
        check_pool_weights("web", {"a": -1})
    with pytest.raises(RouterError, match="preview requests only"):
        check_pool_weights("web", {"preview": 10})
