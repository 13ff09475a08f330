"""The built-in router's live routing table: routes, targets, pools, balancing, health, draining.

Everything here is synchronous and loop-local except `drain_target`, so the proxy can match and
pick on its hot path without awaiting. `on_change` runs after every mutation (the daemon persists
the snapshot then).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Collection
from typing import Any, Protocol

from zerodown.errors import RouterError
from zerodown.routers.base import (
    PREVIEW_POOL,
    DrainResult,
    RouteSpec,
    RouteStatus,
    TargetHealth,
    TargetSpec,
    TargetStatus,
    check_pool_weights,
    pools_of_old_targets,
)

SNAPSHOT_VERSION = 1


class InflightHandle(Protocol):
    """Something in flight on a target (a request or a tunnel) that a forced drain can cut."""

    def abort(self) -> None:
        """Cut it now; it calls `Target.end` itself, at once or soon after."""
        ...


class IdleConnection(Protocol):
    """A pooled upstream connection, as far as the table needs to know it."""

    def close(self) -> None:
        """Close the connection (it is idle: nothing is lost)."""
        ...


class Target:
    """One instance behind a route, with what the proxy is doing with it right now."""

    def __init__(self, spec: TargetSpec, health: TargetHealth) -> None:
        self.spec = spec
        self.health = health
        self.draining = False
        self.retired = False  # no longer in the table: its connections are not pooled again
        self.inflight = 0
        self.exchanges: set[InflightHandle] = set()  # cut on drain timeout
        self.idle: deque[IdleConnection] = deque()  # keep-alive pool, most recent at the right
        self.current_weight = 0.0  # smooth weighted round robin state
        self.drain_task: asyncio.Task[DrainResult] | None = None
        self.drained = asyncio.Event()
        self.finished_while_draining = 0
        self._forcing = False

    def __repr__(self) -> str:
        return (
            f"Target({self.spec.service}/{self.spec.target_id} {self.spec.address} "
            f"{self.health.value} pool={self.spec.pool} inflight={self.inflight}"
            f"{' draining' if self.draining else ''})"
        )

    @property
    def preview(self) -> bool:
        """In the preview pool: only requests with the preview header reach it."""
        return self.spec.pool == PREVIEW_POOL

    def begin(self, handle: InflightHandle) -> None:
        """Count `handle` as in flight until `end(handle)`."""
        self.exchanges.add(handle)
        self.inflight += 1

    def end(self, handle: InflightHandle) -> None:
        """Stop counting `handle`; idempotent, so every error path may call it."""
        if handle not in self.exchanges:
            return
        self.exchanges.discard(handle)
        self.inflight -= 1
        if self.draining:
            if not self._forcing:
                self.finished_while_draining += 1
            if self.inflight == 0:
                self.drained.set()

    def abort_all(self) -> int:
        """Cut everything still in flight (drain timeout); returns how many were cut."""
        self._forcing = True
        handles = list(self.exchanges)
        for handle in handles:
            handle.abort()
        return len(handles)

    def close_idle(self) -> None:
        """Close every pooled idle connection to this target."""
        while self.idle:
            self.idle.pop().close()

    def status(self) -> TargetStatus:
        """This target as the `Router` seam reports it."""
        return TargetStatus(
            spec=self.spec, health=self.health, draining=self.draining, inflight=self.inflight
        )


class Route:
    """A service's route, its targets and its pool weights; `pick` chooses where the next
    request goes."""

    def __init__(self, spec: RouteSpec) -> None:
        self.spec = spec
        self.targets: dict[str, Target] = {}
        # The share of live traffic per pool; empty: every target takes an even share.
        self.pools: dict[str, int] = {}
        self.hosts = frozenset(h.lower() for h in spec.hosts)
        self.listen = frozenset(spec.listen)  # canonical addresses; empty: every listener
        self.preview_header = spec.preview_header.lower().encode("latin-1")
        self.path_under, self.path_exact = _path_match(spec.path_prefix)

    def __repr__(self) -> str:
        return f"Route({self.spec.service} {self.spec.path_prefix} targets={len(self.targets)})"

    def update(self, spec: RouteSpec) -> None:
        """Replace the spec, keeping targets."""
        self.spec = spec
        self.hosts = frozenset(h.lower() for h in spec.hosts)
        self.listen = frozenset(spec.listen)  # canonical addresses; empty: every listener
        self.preview_header = spec.preview_header.lower().encode("latin-1")
        self.path_under, self.path_exact = _path_match(spec.path_prefix)

    def matches_path(self, path: str) -> bool:
        """Whether `path` is under this route's prefix, on a segment boundary."""
        return path.startswith(self.path_under) or path == self.path_exact

    def in_rotation(self, target: Target) -> bool:
        """Whether live requests may go to `target`: healthy, not draining, in a pool that
        has a share of live traffic."""
        if target.health is not TargetHealth.HEALTHY or target.draining or target.preview:
            return False
        return not self.pools or self.pools.get(target.spec.pool, 0) > 0

    def forget_empty_pools(self) -> bool:
        """Drop the weights of pools no target is in any more; True if some were dropped."""
        used = {t.spec.pool for t in self.targets.values()}
        empty = [pool for pool in self.pools if pool not in used]
        for pool in empty:
            del self.pools[pool]
        return bool(empty)

    def pick(
        self,
        exclude: Collection[Target] = (),
        *,
        preview: bool = False,
        revision: str | None = None,
    ) -> Target | None:
        """The target for the next request, or None when no target is eligible.

        `preview`: the request carries the preview header, so only preview targets qualify
        (whatever their weight: the weights split live traffic). `revision`: the client's sticky
        revision, honoured while that revision has an eligible target.
        """
        if preview:
            previews = [
                t
                for t in self.targets.values()
                if t.preview
                and t.health is TargetHealth.HEALTHY
                and not t.draining
                and t not in exclude
            ]
            return min(previews, key=lambda t: t.inflight) if previews else None
        # `in_rotation` spelled out, in a plain loop: this runs for every request, and a method
        # call per target (or a comprehension's frame) costs more than the checks.
        healthy = TargetHealth.HEALTHY
        pools = self.pools
        candidates = []
        for t in self.targets.values():
            pool = t.spec.pool
            if (
                t.health is healthy
                and not t.draining
                and pool != PREVIEW_POOL
                and (not pools or pools.get(pool, 0) > 0)
                and t not in exclude
            ):
                candidates.append(t)
        if revision is not None and len(candidates) > 1:
            same = [t for t in candidates if t.spec.revision == revision]
            if same:
                candidates = same
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        weights = _split(candidates, pools) if pools else None
        if self.spec.balance == "least_inflight":
            candidates, weights = _least_loaded(candidates, weights)
            if len(candidates) == 1:
                return candidates[0]
        return _smooth_weighted(candidates, weights)


def _path_match(prefix: str) -> tuple[str, str]:
    # A path is under `prefix` on a segment boundary if it starts with the first string or
    # equals the second: "/api" and "/api/" both give ("/api/", "/api"); "/" gives ("/", "").
    if prefix.endswith("/"):
        return prefix, prefix[:-1]
    return prefix + "/", prefix


def _split(candidates: list[Target], pools: dict[str, int]) -> list[float] | None:
    """Each candidate's weight: its pool's share split evenly among the pool's candidates;
    None when they are all in one pool (equal weights)."""
    counts: dict[str, int] = {}
    for t in candidates:
        counts[t.spec.pool] = counts.get(t.spec.pool, 0) + 1
    if len(counts) == 1:
        return None
    return [pools[t.spec.pool] / counts[t.spec.pool] for t in candidates]


def _least_loaded(
    candidates: list[Target], weights: list[float] | None
) -> tuple[list[Target], list[float] | None]:
    # The least inflight per weight; compared as a.inflight * b.weight vs b.inflight * a.weight.
    if weights is None:
        least = min(t.inflight for t in candidates)
        return [t for t in candidates if t.inflight == least], None
    best, best_weights = [candidates[0]], [weights[0]]
    for t, weight in zip(candidates[1:], weights[1:], strict=True):
        ref, ref_weight = best[0], best_weights[0]
        lhs, rhs = t.inflight * ref_weight, ref.inflight * weight
        if lhs < rhs:
            best, best_weights = [t], [weight]
        elif lhs == rhs:
            best.append(t)
            best_weights.append(weight)
    return best, best_weights


def _smooth_weighted(candidates: list[Target], weights: list[float] | None) -> Target:
    # nginx's smooth weighted round robin: spreads a 3:1 split as a,a,b,a rather than a,a,a,b.
    total = 0.0
    best = candidates[0]
    for index, t in enumerate(candidates):
        weight = 1.0 if weights is None else weights[index]
        t.current_weight += weight
        total += weight
        if t.current_weight > best.current_weight:
            best = t
    best.current_weight -= total
    return best


class RoutingTable:
    """All routes and targets of the built-in router; the daemon mutates, the proxy reads."""

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self._routes: dict[str, Route] = {}
        self._order: list[Route] = []  # match order: longest prefix first, host-bound first
        self._on_change = on_change
        # Lowercased preview header names of all routes: the proxy spots them in one set lookup.
        self.preview_headers: frozenset[bytes] = frozenset()

    # -- reading -------------------------------------------------------------------------------

    def match(self, host: str | None, path: str, listener: str | None = None) -> Route | None:
        """The route for a request: the address it arrived on (`listener`, canonical host:port),
        Host (without port) and the longest matching path prefix. A route bound to addresses
        matches only on them; with `listener` None (unknown) only unbound routes match."""
        host = host.lower() if host else None
        for route in self._order:  # matches_path inlined: this runs for every request
            if route.hosts and host not in route.hosts:
                continue
            if route.listen and listener not in route.listen:
                continue
            if path.startswith(route.path_under) or path == route.path_exact:
                return route
        return None

    def routes(self) -> list[Route]:
        """Every route, in the order they were applied."""
        return list(self._routes.values())

    def targets(self, service: str) -> list[Target]:
        """A service's targets, draining ones included; [] for an unknown service."""
        route = self._routes.get(service)
        return list(route.targets.values()) if route else []

    def status(self, service: str | None = None) -> list[RouteStatus]:
        """Routes and targets as the router sees them now (draining targets included)."""
        routes = [self._route(service)] if service is not None else list(self._routes.values())
        return [
            RouteStatus(
                route=r.spec,
                targets=tuple(t.status() for t in r.targets.values()),
                pools=dict(r.pools),
            )
            for r in routes
        ]

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy of routes and targets; draining targets are left out (they go)."""
        return {
            "version": SNAPSHOT_VERSION,
            "routes": [
                {
                    "route": r.spec.to_dict(),
                    "pools": dict(r.pools),
                    "targets": [
                        {"target": t.spec.to_dict(), "health": t.health.value}
                        for t in r.targets.values()
                        if not t.draining
                    ],
                }
                for r in self._routes.values()
            ],
        }

    # -- mutating ------------------------------------------------------------------------------

    def restore(self, data: dict[str, Any]) -> None:
        """Make the table equal to a `snapshot()`; in-flight exchanges keep their targets."""
        if data.get("version", SNAPSHOT_VERSION) != SNAPSHOT_VERSION:
            raise RouterError(f"cannot restore router state version {data.get('version')!r}")
        wanted: dict[
            str, tuple[RouteSpec, list[tuple[TargetSpec, TargetHealth]], dict[str, int]]
        ] = {}
        try:
            for item in data.get("routes", []):
                spec = RouteSpec.from_dict(item["route"])
                items = item.get("targets", [])
                targets = [
                    (TargetSpec.from_dict(t["target"]), TargetHealth(t.get("health", "unknown")))
                    for t in items
                ]
                # A snapshot of an older router has per-target weights instead of pools.
                pools = item.get("pools")
                if pools is None:
                    pools = pools_of_old_targets(t["target"] for t in items)
                wanted[spec.service] = (spec, targets, check_pool_weights(spec.service, pools))
        except (KeyError, TypeError, ValueError) as exc:
            raise RouterError(f"router state is malformed ({exc!r}); fix or delete it") from exc
        for service in list(self._routes):
            if service not in wanted:
                self._drop_route(service)
        for service, (spec, targets, pools) in wanted.items():
            route = self._routes.get(service)
            if route is None:
                route = self._routes[service] = Route(spec)
            else:
                route.update(spec)
            keep = {t.target_id for t, _ in targets}
            for target_id, target in list(route.targets.items()):
                if target_id not in keep and not target.draining:
                    target.retired = True
                    target.close_idle()
                    del route.targets[target_id]
            for tspec, health in targets:
                self._put_target(route, tspec).health = health
            route.pools = dict(pools)
            route.forget_empty_pools()
        self._reorder()
        self._changed()

    def apply_route(self, route: RouteSpec) -> None:
        """Create or update a route; its targets are kept."""
        if not route.path_prefix.startswith("/"):
            raise RouterError(f"path_prefix {route.path_prefix!r} must start with '/'")
        existing = self._routes.get(route.service)
        if existing is None:
            self._routes[route.service] = Route(route)
        else:
            existing.update(route)
        self._reorder()
        self._changed()

    def remove_route(self, service: str) -> None:
        """Delete a route and forget its targets (in-flight exchanges finish on their own)."""
        self._route(service)
        self._drop_route(service)
        self._reorder()
        self._changed()

    def add_target(self, spec: TargetSpec, *, healthy: bool) -> Target:
        """Add a target, or update it in place if its id exists (health kept unless `healthy`);
        a target that moves to another pool leaves its old one (forgotten if now empty)."""
        route = self._route(spec.service)
        existing = route.targets.get(spec.target_id)
        if existing is not None and existing.draining:
            raise RouterError(
                f"target {spec.target_id!r} of {spec.service!r} is draining; "
                "wait for the drain to finish before adding it again"
            )
        target = self._put_target(route, spec)
        if healthy:
            target.health = TargetHealth.HEALTHY
        route.forget_empty_pools()
        self._changed()
        return target

    def set_pool_weights(self, service: str, weights: dict[str, int]) -> None:
        """Give pools their shares of live traffic in one step (pools not named keep theirs);
        nothing changes if a weight is refused."""
        route = self._route(service)
        route.pools.update(check_pool_weights(service, weights))
        for target in route.targets.values():
            target.current_weight = 0.0  # a fresh cycle honours the new split at once
        self._changed()

    def set_health(self, service: str, target_id: str, health: TargetHealth) -> None:
        """Record a health verdict (from the active monitor)."""
        target = self._target(service, target_id)
        if target.health is not health:
            target.health = health
            self._changed()

    def report_connect_failure(self, target: Target) -> None:
        """Passive signal: connecting failed, so stop sending traffic until checks pass again."""
        route = self._routes.get(target.spec.service)
        if route is None or route.targets.get(target.spec.target_id) is not target:
            return  # already gone from the table
        if target.health is not TargetHealth.UNHEALTHY:
            target.health = TargetHealth.UNHEALTHY
            target.close_idle()
            self._changed()

    async def drain_target(
        self, service: str, target_id: str, timeout: float | None = None
    ) -> DrainResult:
        """Stop new picks now, wait for in-flight work up to `timeout`, cut the rest, remove it."""
        route = self._route(service)
        target = route.targets.get(target_id)
        if target is None:
            raise RouterError(f"service {service!r} has no target {target_id!r} to drain")
        if target.drain_task is None:
            target.draining = True
            target.close_idle()
            if target.inflight == 0:
                target.drained.set()
            wait = route.spec.drain_timeout if timeout is None else timeout
            loop = asyncio.get_running_loop()
            target.drain_task = loop.create_task(self._drain(route, target, wait))
            self._changed()
        return await asyncio.shield(target.drain_task)

    async def _drain(self, route: Route, target: Target, timeout: float) -> DrainResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        forced = 0
        try:
            async with asyncio.timeout(timeout):
                await target.drained.wait()
        except TimeoutError:
            forced = target.abort_all()
        target.retired = True
        target.close_idle()
        if route.targets.get(target.spec.target_id) is target:
            del route.targets[target.spec.target_id]
            route.forget_empty_pools()
            self._changed()
        return DrainResult(
            target_id=target.spec.target_id,
            seconds=round(loop.time() - started, 3),
            finished=target.finished_while_draining,
            forced=forced,
        )

    # -- internals -----------------------------------------------------------------------------

    def _route(self, service: str) -> Route:
        route = self._routes.get(service)
        if route is None:
            raise RouterError(f"no route for service {service!r}: apply the route first")
        return route

    def _target(self, service: str, target_id: str) -> Target:
        target = self._route(service).targets.get(target_id)
        if target is None:
            raise RouterError(f"service {service!r} has no target {target_id!r}")
        return target

    def _put_target(self, route: Route, spec: TargetSpec) -> Target:
        target = route.targets.get(spec.target_id)
        if target is None:
            target = route.targets[spec.target_id] = Target(spec, TargetHealth.UNKNOWN)
            return target
        if (target.spec.host, target.spec.port) != (spec.host, spec.port):
            target.close_idle()
        target.spec = spec
        return target

    def _drop_route(self, service: str) -> None:
        route = self._routes.pop(service)
        for target in route.targets.values():
            target.retired = True
            target.close_idle()

    def _reorder(self) -> None:
        self._order = sorted(
            self._routes.values(),
            key=lambda r: (len(r.spec.path_prefix.rstrip("/")), bool(r.hosts), bool(r.listen)),
            reverse=True,
        )
        self.preview_headers = frozenset(r.preview_header for r in self._routes.values())

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()
