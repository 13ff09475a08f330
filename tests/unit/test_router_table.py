"""The built-in router's routing table: matching, pools, balancing, health, draining,
persistence."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest

from zerodown.errors import RouterError
from zerodown.routers.base import (
    Balance,
    RouteSpec,
    TargetHealth,
    TargetSpec,
    canonical_address,
)
from zerodown.routers.builtin.table import RoutingTable, Target


class FakeExchange:
    """An in-flight request as the table sees it: a handle a forced drain can abort."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.aborted = False
        target.begin(self)

    def finish(self) -> None:
        self.target.end(self)

    def abort(self) -> None:
        self.aborted = True
        self.target.end(self)


def make_table(
    weights: dict[str, int], balance: Balance = "round_robin", service: str = "web"
) -> RoutingTable:
    """One healthy target per entry, each in a pool of its own (named like it) at that weight."""
    table = RoutingTable()
    table.apply_route(RouteSpec(service=service, balance=balance, drain_timeout=5.0))
    for i, target_id in enumerate(weights):
        spec = TargetSpec(
            service=service, target_id=target_id, host="127.0.0.1", port=9000 + i, pool=target_id
        )
        table.add_target(spec, healthy=True)
    table.set_pool_weights(service, weights)
    return table


def picks(table: RoutingTable, n: int, service: str = "web") -> Counter[str]:
    route = next(r for r in table.routes() if r.spec.service == service)
    counts: Counter[str] = Counter()
    for _ in range(n):
        target = route.pick()
        assert target is not None
        counts[target.spec.target_id] += 1
    return counts


@pytest.mark.parametrize("balance", ["round_robin", "least_inflight"])
def test_weights_90_10_give_90_10_of_picks(balance: Balance) -> None:
    table = make_table({"a": 90, "b": 10}, balance=balance)
    assert picks(table, 1000) == {"a": 900, "b": 100}


def test_smooth_round_robin_interleaves_instead_of_bursting() -> None:
    table = make_table({"a": 3, "b": 1})
    route = table.routes()[0]
    order = [route.pick().spec.target_id for _ in range(8)]  # type: ignore[union-attr]
    assert order == ["a", "a", "b", "a", "a", "a", "b", "a"]


def test_least_inflight_prefers_the_least_loaded_per_weight() -> None:
    table = make_table({"a": 100, "b": 100, "c": 200}, balance="least_inflight")
    route = table.routes()[0]
    a, b, c = (route.targets[x] for x in "abc")
    busy = [FakeExchange(a), FakeExchange(a), FakeExchange(b), FakeExchange(c), FakeExchange(c)]
    # inflight/weight: a=2/100, b=1/100, c=2/200 -> b and c tie at 0.01; weights 100:200.
    assert picks(table, 300) == {"b": 100, "c": 200}
    busy[2].finish()  # b drops to 0
    assert route.pick() is b


def test_least_inflight_ties_rotate() -> None:
    table = make_table({"a": 1, "b": 1, "c": 1}, balance="least_inflight")
    assert picks(table, 9) == {"a": 3, "b": 3, "c": 3}


def test_draining_unhealthy_and_weight_zero_targets_are_never_picked() -> None:
    table = make_table({"ok": 10, "sick": 10, "zero": 10, "unknown": 10, "going": 10})
    table.set_health("web", "sick", TargetHealth.UNHEALTHY)
    table.set_pool_weights("web", {"zero": 0})
    table.routes()[0].targets["going"].draining = True
    spec = TargetSpec(service="web", target_id="new", host="127.0.0.1", port=9100)
    fresh = table.add_target(spec, healthy=False)
    assert fresh.health is TargetHealth.UNKNOWN
    table.routes()[0].targets["unknown"].health = TargetHealth.UNKNOWN
    assert picks(table, 50) == {"ok": 50}


def test_pick_returns_none_without_an_eligible_target_and_honours_exclude() -> None:
    table = make_table({"a": 1, "b": 1})
    route = table.routes()[0]
    assert route.pick(exclude=[route.targets["a"], route.targets["b"]]) is None
    assert route.pick(exclude=[route.targets["a"]]) is route.targets["b"]


def test_set_pool_weights_refuses_bad_weights_whole_and_changes_the_split_at_once() -> None:
    """A negative weight or a weight for the preview pool is refused and changes nothing; a
    good change is one table change (one on_change) and the next picks follow it exactly."""
    changes: list[dict[str, int]] = []
    table = make_table({"a": 50, "b": 50})
    route = table.routes()[0]
    table._on_change = lambda: changes.append(dict(route.pools))
    with pytest.raises(RouterError, match="must be >= 0"):
        table.set_pool_weights("web", {"a": 10, "b": -1})
    with pytest.raises(RouterError, match="preview"):
        table.set_pool_weights("web", {"a": 10, "preview": 90})
    assert route.pools == {"a": 50, "b": 50} and changes == []
    table.set_pool_weights("web", {"a": 10, "b": 90})
    assert changes == [{"a": 10, "b": 90}]
    assert picks(table, 100) == {"a": 10, "b": 90}


def test_a_pools_share_is_split_among_its_healthy_targets() -> None:
    """Pools 90 : 10 with three targets in the first: each of those gets 30 %; when one is
    unhealthy its share goes to its pool-mates (45 % each), not to the other pool."""
    table = RoutingTable()
    table.apply_route(RouteSpec(service="web", balance="round_robin"))
    for i, (target_id, pool) in enumerate([("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b")]):
        table.add_target(TargetSpec("web", target_id, "h", 9000 + i, pool=pool), healthy=True)
    table.set_pool_weights("web", {"a": 90, "b": 10})
    assert picks(table, 1000) == {"a1": 300, "a2": 300, "a3": 300, "b1": 100}
    table.set_health("web", "a3", TargetHealth.UNHEALTHY)
    assert picks(table, 1000) == {"a1": 450, "a2": 450, "b1": 100}


def test_without_pool_weights_every_target_shares_evenly_and_an_unweighted_pool_gets_none() -> None:
    """Before any pool weight every target takes an even share, whatever its pool; once the
    route has pool weights, a pool without one gets no live traffic."""
    table = RoutingTable()
    table.apply_route(RouteSpec(service="web", balance="round_robin"))
    for i, (target_id, pool) in enumerate([("a1", "a"), ("a2", "a"), ("b1", "b")]):
        table.add_target(TargetSpec("web", target_id, "h", 9000 + i, pool=pool), healthy=True)
    assert picks(table, 300) == {"a1": 100, "a2": 100, "b1": 100}
    table.set_pool_weights("web", {"b": 100})
    assert picks(table, 300) == {"b1": 300}
    assert table.status("web")[0].pools == {"b": 100}


async def test_a_pools_weight_is_forgotten_with_its_last_target() -> None:
    """Draining the last target of a pool (or moving it to another pool) drops the pool's
    weight; a pool that still has a target keeps it."""
    table = RoutingTable()
    table.apply_route(RouteSpec(service="web", drain_timeout=1.0))
    for i, (target_id, pool) in enumerate([("a1", "a"), ("b1", "b"), ("b2", "b")]):
        table.add_target(TargetSpec("web", target_id, "h", 9000 + i, pool=pool), healthy=True)
    table.set_pool_weights("web", {"a": 0, "b": 100})
    await table.drain_target("web", "b1")
    assert table.routes()[0].pools == {"a": 0, "b": 100}
    await table.drain_target("web", "a1")
    assert table.routes()[0].pools == {"b": 100}
    table.add_target(TargetSpec("web", "b2", "127.0.0.1", 9002, pool="c"), healthy=True)
    assert table.routes()[0].pools == {}


def test_a_snapshot_of_an_older_router_is_read_with_its_split() -> None:
    """state.json of the router before pools (per-target weights, engine labels): read without
    error, labels dropped, each revision a pool weighing what its targets weighed, the preview
    label kept as the preview pool; a fleet at equal weights stays an even split."""

    def old(target_id: str, revision: str, weight: int, **labels: str) -> dict[str, object]:
        target = {"service": "web", "target_id": target_id, "host": "127.0.0.1", "port": 1}
        target |= {"revision": revision, "weight": weight, "labels": labels}
        return {"target": target, "health": "healthy"}

    route = RouteSpec(service="web", balance="round_robin").to_dict()
    canary = [old("c1", "v2", 20), old("b1", "v1", 90), old("b2", "v1", 90)]
    canary.append(old("g1", "v3", 100, pool="preview", deployment="d3"))
    table = RoutingTable()
    table.restore({"version": 1, "routes": [{"route": route, "targets": canary}]})
    web = table.routes()[0]
    assert web.pools == {"v2": 20, "v1": 180}
    assert {t.spec.target_id: t.spec.pool for t in web.targets.values()} == {
        "c1": "v2",
        "b1": "v1",
        "b2": "v1",
        "g1": "preview",
    }
    assert picks(table, 200) == {"c1": 20, "b1": 90, "b2": 90}
    warm = [old("a1", "v1", 0, warm_until="1.0"), old("a2", "v2", 100)]
    table.restore({"version": 1, "routes": [{"route": route, "targets": warm}]})
    assert table.routes()[0].pools == {"v1-out": 0, "v2": 100}
    even = [old("a1", "v1", 100), old("a2", "v2", 100)]
    table.restore({"version": 1, "routes": [{"route": route, "targets": even}]})
    assert table.routes()[0].pools == {}


def test_match_by_host_and_longest_prefix() -> None:
    table = RoutingTable()
    table.apply_route(RouteSpec(service="site"))
    table.apply_route(RouteSpec(service="api", path_prefix="/api"))
    table.apply_route(RouteSpec(service="api-v2", path_prefix="/api/v2/"))
    table.apply_route(RouteSpec(service="admin", hosts=("admin.example.com",)))

    def served(host: str | None, path: str) -> str | None:
        route = table.match(host, path)
        return route.spec.service if route else None

    assert served("x.test", "/") == "site"
    assert served("x.test", "/api") == "api"
    assert served("x.test", "/api/users") == "api"
    assert served("x.test", "/apix") == "site"  # prefixes match whole segments
    assert served("x.test", "/api/v2/users") == "api-v2"
    assert served("x.test", "/api/v2") == "api-v2"
    assert served("ADMIN.example.com", "/") == "admin"
    assert served("admin.example.com", "/api/x") == "api"  # a longer prefix beats a host
    assert served(None, "/") == "site"
    table.remove_route("site")
    assert served("x.test", "/") is None


def test_environments_of_one_service_are_matched_by_the_address_a_request_arrived_on() -> None:
    table = RoutingTable()
    table.apply_route(RouteSpec(service="api.prod", listen=("127.0.0.1:8080",)))
    table.apply_route(RouteSpec(service="api.canary", listen=("localhost:8081",)))
    table.apply_route(RouteSpec(service="admin", path_prefix="/admin"))  # bound to no address

    def served(listener: str | None, path: str = "/") -> str | None:
        route = table.match("x.test", path, listener)
        return route.spec.service if route else None

    assert served("127.0.0.1:8080") == "api.prod"
    assert served("127.0.0.1:8081") == "api.canary"  # localhost is spelled 127.0.0.1
    assert served("127.0.0.1:9999") is None  # no route is bound there, none is unbound for /
    assert served(None) is None
    assert served("127.0.0.1:8081", "/admin/x") == "admin"  # an unbound route: every address
    data = json.loads(json.dumps(table.snapshot()))  # the addresses survive a restart
    restored = RoutingTable()
    restored.restore(data)
    assert restored.match("x.test", "/", "127.0.0.1:8081").spec.service == "api.canary"  # type: ignore[union-attr]


def test_a_route_bound_to_an_address_wins_over_an_unbound_one_with_the_same_path() -> None:
    table = RoutingTable()
    table.apply_route(RouteSpec(service="old"))  # from before routes carried addresses
    table.apply_route(RouteSpec(service="api.canary", listen=("[::1]:8081",)))
    assert table.match(None, "/", "[::1]:8081").spec.service == "api.canary"  # type: ignore[union-attr]
    assert table.match(None, "/", "127.0.0.1:8080").spec.service == "old"  # type: ignore[union-attr]


def test_canonical_address_spells_one_address_one_way() -> None:
    assert canonical_address("localhost:80") == "127.0.0.1:80"
    assert canonical_address("[::0001]:80") == "[::1]:80"
    assert canonical_address("::1:80") == "[::1]:80"
    assert canonical_address(":80") == "0.0.0.0:80"
    assert RouteSpec(service="a", listen=("localhost:80",)).listen == ("127.0.0.1:80",)


def test_on_change_runs_after_every_mutation() -> None:
    changes: list[int] = []
    table = RoutingTable(on_change=lambda: changes.append(1))
    table.apply_route(RouteSpec(service="web"))
    spec = TargetSpec(service="web", target_id="a", host="127.0.0.1", port=1)
    target = table.add_target(spec, healthy=True)
    table.set_pool_weights("web", {"": 5})
    table.set_health("web", "a", TargetHealth.UNHEALTHY)
    table.set_health("web", "a", TargetHealth.HEALTHY)
    table.report_connect_failure(target)
    table.remove_route("web")
    assert len(changes) == 7


def test_unknown_service_or_target_raises_router_error_naming_it() -> None:
    table = make_table({"a": 1})
    with pytest.raises(RouterError, match="'ghost'"):
        table.add_target(TargetSpec("ghost", "x", "127.0.0.1", 1), healthy=True)
    with pytest.raises(RouterError, match="'zz'"):
        table.set_health("web", "zz", TargetHealth.HEALTHY)


def test_snapshot_restore_round_trip_leaves_out_draining_targets() -> None:
    table = make_table({"a": 90, "b": 10}, balance="least_inflight")
    table.set_health("web", "b", TargetHealth.UNHEALTHY)
    table.apply_route(RouteSpec(service="api", hosts=("api.test",), path_prefix="/v1"))
    table.add_target(TargetSpec("api", "c", "127.0.0.1", 9200, revision="r7"), healthy=False)
    spec = TargetSpec(service="web", target_id="old", host="127.0.0.1", port=9300)
    table.add_target(spec, healthy=True).draining = True

    data = json.loads(json.dumps(table.snapshot()))
    restored = RoutingTable()
    restored.restore(data)

    assert restored.snapshot() == data
    assert [t.spec.target_id for t in restored.targets("web")] == ["a", "b"]
    web = {t.spec.target_id: t for t in restored.targets("web")}
    assert restored.routes()[0].pools == {"a": 90, "b": 10}
    assert web["a"].spec.pool == "a" and web["a"].health is TargetHealth.HEALTHY
    assert web["b"].health is TargetHealth.UNHEALTHY
    assert restored.targets("api")[0].spec.revision == "r7"
    assert restored.match("api.test", "/v1/x") is not None


def test_restore_drops_routes_and_targets_missing_from_the_snapshot() -> None:
    table = make_table({"a": 1, "b": 1})
    small = make_table({"a": 1})
    table.restore(small.snapshot())
    assert [t.spec.target_id for t in table.targets("web")] == ["a"]
    table.restore({"version": 1, "routes": []})
    assert table.routes() == []
    with pytest.raises(RouterError, match="malformed"):
        table.restore({"version": 1, "routes": [{"nope": 1}]})


async def test_drain_waits_for_inflight_on_an_event_then_removes_the_target() -> None:
    table = make_table({"a": 1, "b": 1})
    target = table.routes()[0].targets["a"]
    first, second = FakeExchange(target), FakeExchange(target)

    drain = asyncio.create_task(table.drain_target("web", "a"))
    await asyncio.sleep(0)  # let the drain start
    assert target.draining and not drain.done()
    assert picks(table, 10) == {"b": 10}  # no new picks, at once
    first.finish()
    await asyncio.sleep(0)
    assert not drain.done()
    second.finish()  # the event fires: no polling interval to wait for
    result = await asyncio.wait_for(drain, 1.0)

    assert (result.target_id, result.finished, result.forced) == ("a", 2, 0)
    assert result.seconds < 1.0
    assert [t.spec.target_id for t in table.targets("web")] == ["b"]
    saved = table.snapshot()["routes"][0]["targets"]
    assert [t["target"]["target_id"] for t in saved] == ["b"]


async def test_drain_timeout_aborts_what_is_left_and_counts_it_forced() -> None:
    table = make_table({"a": 1})
    target = table.routes()[0].targets["a"]
    done, stuck1, stuck2 = FakeExchange(target), FakeExchange(target), FakeExchange(target)

    drain = asyncio.create_task(table.drain_target("web", "a", timeout=0.2))
    await asyncio.sleep(0)
    done.finish()
    result = await asyncio.wait_for(drain, 2.0)

    assert (result.finished, result.forced) == (1, 2)
    assert stuck1.aborted and stuck2.aborted and not done.aborted
    assert 0.2 <= result.seconds < 1.0
    assert target.inflight == 0 and table.targets("web") == []


async def test_draining_twice_waits_on_the_same_drain() -> None:
    table = make_table({"a": 1})
    exchange = FakeExchange(table.routes()[0].targets["a"])
    first = asyncio.create_task(table.drain_target("web", "a"))
    second = asyncio.create_task(table.drain_target("web", "a"))
    await asyncio.sleep(0)
    exchange.finish()
    one, two = await asyncio.wait_for(asyncio.gather(first, second), 1.0)
    assert one == two and one.finished == 1


async def test_drain_of_an_idle_target_returns_at_once_and_unknown_target_raises() -> None:
    table = make_table({"a": 1})
    result = await asyncio.wait_for(table.drain_target("web", "a"), 1.0)
    assert (result.finished, result.forced) == (0, 0)
    with pytest.raises(RouterError, match="'a'"):
        await table.drain_target("web", "a")


def test_report_connect_failure_marks_unhealthy_at_once() -> None:
    table = make_table({"a": 1, "b": 1})
    a = table.routes()[0].targets["a"]
    table.report_connect_failure(a)
    assert a.health is TargetHealth.UNHEALTHY
    assert picks(table, 4) == {"b": 4}
