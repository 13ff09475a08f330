"""The HAProxy router's routes.json and how pool weights become server weights."""

from __future__ import annotations

import json
from pathlib import Path

from zerodown.routers.base import RouteSpec, TargetSpec
from zerodown.routers.haproxy.state import HaproxyPaths, RouteEntry, load_state, save_state


def _entry(*targets: tuple[str, str], pools: dict[str, int] | None = None) -> RouteEntry:
    entry = RouteEntry(RouteSpec("web.prod"), pools=dict(pools or {}))
    for index, (target_id, pool) in enumerate(targets):
        entry.targets[target_id] = TargetSpec(
            "web.prod", target_id, "127.0.0.1", 9000 + index, revision=pool, pool=pool
        )
    return entry


def test_a_pools_share_is_split_among_its_servers_that_are_not_draining() -> None:
    """Pools 90 : 10, three servers in the first: 30 each and 10; one of them draining: it gets
    0 and its pool-mates 45 each (the pool keeps its 90 %)."""
    entry = _entry(("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), pools={"a": 90, "b": 10})
    assert entry.server_weights(preview=False) == {"a1": 30, "a2": 30, "a3": 30, "b1": 10}
    entry.draining.add("a3")
    assert entry.server_weights(preview=False) == {"a1": 45, "a2": 45, "a3": 0, "b1": 10}


def test_without_pool_weights_every_server_weighs_alike_and_preview_servers_too() -> None:
    """No pool weights: an even split; the preview backend's servers always weigh alike; a
    pool without a weight on a weighted route weighs 0; shares that are no integers scale."""
    entry = _entry(("a1", "a"), ("b1", "b"), ("g1", "preview"))
    assert entry.server_weights(preview=False) == {"a1": 100, "b1": 100}
    assert entry.server_weights(preview=True) == {"g1": 100}
    entry.pools = {"b": 100}
    assert entry.server_weights(preview=False) == {"a1": 0, "b1": 100}
    three = _entry(("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), pools={"a": 50, "b": 50})
    weights = three.server_weights(preview=False)
    assert weights == {"a1": 85, "a2": 85, "a3": 85, "b1": 256}  # 16.7 % each and 50 %


def test_routes_json_of_an_older_zerodown_is_read_with_its_split(tmp_path: Path) -> None:
    """routes.json before pools (per-target weights and the engine's labels) loads without
    error: each revision a pool weighing its targets' sum, the preview label the preview pool;
    written back, it holds servers, pools and weights, no labels."""
    paths = HaproxyPaths(tmp_path / "haproxy")
    paths.create()
    route = RouteSpec("web.prod").to_dict()

    def old(target_id: str, revision: str, weight: int, **labels: str) -> dict[str, object]:
        target = {"service": "web.prod", "target_id": target_id, "host": "127.0.0.1"}
        return target | {"port": 1, "revision": revision, "weight": weight, "labels": labels}

    targets = [
        old("blue1", "v1", 0, deployment="d1", warm_until="1700000000.0"),
        old("green1", "v2", 100, deployment="d2"),
        old("green2", "v2", 100, deployment="d2"),
        old("next1", "v3", 100, pool="preview", deployment="d3"),
    ]
    data = {"version": 1, "listen": [], "routes": [{"route": route, "targets": targets}]}
    paths.routes.write_text(json.dumps(data))
    entry = load_state(paths).route("web.prod")
    assert entry.pools == {"v1-out": 0, "v2": 200}
    assert {t.target_id: t.pool for t in entry.targets.values()} == {
        "blue1": "v1-out",
        "green1": "v2",
        "green2": "v2",
        "next1": "preview",
    }
    assert entry.server_weights(preview=False) == {"blue1": 0, "green1": 100, "green2": 100}
    save_state(paths, load_state(paths))
    written = paths.routes.read_text()
    assert "labels" not in written and "warm_until" not in written and "deployment" not in written
    assert load_state(paths).route("web.prod").pools == {"v1-out": 0, "v2": 200}
