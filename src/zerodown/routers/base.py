"""The `Router` seam: how the control plane tells a router where a service's traffic goes.

A router owns routes (which requests belong to which service) and targets (the instances of a
service that may receive them). Every target is in one pool, named by the engine
(`TargetSpec.pool`): traffic moves between pools, never between single targets.
`set_pool_weights` gives each pool its share of the route's live traffic in one atomic step; the
router splits a pool's share among its healthy, not draining targets. Until a route has pool
weights, all its targets share evenly; once it has them, a pool without a weight gets no live
traffic. A pool's weight is forgotten when its last target leaves. The pool `preview` gets only
the requests that carry the route's preview header, and those requests get only it (blue/green
before its switch). An AWS ALB expresses this as one target group per pool, HAProxy as
per-server weights (pool share / servers), the built-in router natively.

The router keeps no bookkeeping of the engine's: which deployment started a target, and until when
a warm fleet is kept, live in the runtime's labels and the history store.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from zerodown.errors import RouterError
from zerodown.health.spec import HealthCheckSpec, TargetHealth

Balance = Literal["least_inflight", "round_robin"]
PREVIEW_POOL = "preview"  # the pool of targets that only preview requests reach
EVEN_WEIGHT = 100  # what every pool weighs while a route has no pool weights (an even split)
STICKY_COOKIE = "zerodown_rev"  # the cookie that keeps a client on one revision

__all__ = ["TargetHealth"]  # re-exported: routers and the engine name it from here


def canonical_address(address: str) -> str:
    """`host:port` spelled one way, so a route's address compares equal to its listener's:
    IP literals compressed, IPv6 in brackets, `localhost` as 127.0.0.1, no host as 0.0.0.0."""
    host, _, port = address.strip().rpartition(":")
    host = host.strip("[]").lower()
    if host in ("", "*"):
        host = "0.0.0.0"
    elif host == "localhost":
        host = "127.0.0.1"
    with contextlib.suppress(ValueError):  # a name is compared as written
        host = ipaddress.ip_address(host).compressed
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class RouteSpec:
    """Which requests belong to a service, and how its targets are balanced and checked."""

    service: str
    hosts: tuple[str, ...] = ()  # Host header values (port ignored); empty: any host
    path_prefix: str = "/"
    # The router addresses (host:port) whose connections this route serves; empty: every one.
    # Environments of one service get the same hosts and path but their own address.
    listen: tuple[str, ...] = ()
    balance: Balance = "least_inflight"
    health: HealthCheckSpec | None = None  # the router's own active checks; None: passive only
    drain_timeout: float = 30.0
    # A cookie `zerodown_rev=<revision>` keeps a client on its revision (canary, blue/green).
    sticky: bool = False
    # Requests carrying this header reach only targets of the pool `preview` (blue/green).
    preview_header: str = "X-Zerodown-Preview"

    def __post_init__(self) -> None:
        # canonical, so the router compares addresses as strings on its hot path
        object.__setattr__(self, "listen", tuple(canonical_address(a) for a in self.listen))

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "hosts": list(self.hosts),
            "path_prefix": self.path_prefix,
            "listen": list(self.listen),
            "balance": self.balance,
            "health": self.health.to_dict() if self.health else None,
            "drain_timeout": self.drain_timeout,
            "sticky": self.sticky,
            "preview_header": self.preview_header,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RouteSpec:
        health = data.get("health")
        return cls(
            service=data["service"],
            hosts=tuple(data.get("hosts", ())),
            path_prefix=data.get("path_prefix", "/"),
            listen=tuple(str(a) for a in data.get("listen", ())),
            balance=data.get("balance", "least_inflight"),
            health=HealthCheckSpec.from_dict(health) if health else None,
            drain_timeout=float(data.get("drain_timeout", 30.0)),
            sticky=bool(data.get("sticky", False)),
            preview_header=str(data.get("preview_header", "X-Zerodown-Preview")),
        )


@dataclass(frozen=True)
class TargetSpec:
    """One instance as the router sees it: where it listens, its revision (the sticky cookie's
    value) and the pool the engine put it in."""

    service: str
    target_id: str  # the instance id
    host: str
    port: int
    revision: str = ""
    pool: str = ""  # set by the engine; `preview`: preview traffic only

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def preview(self) -> bool:
        """In the preview pool: only requests with the route's preview header reach it."""
        return self.pool == PREVIEW_POOL

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "target_id": self.target_id,
            "host": self.host,
            "port": self.port,
            "revision": self.revision,
            "pool": self.pool,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TargetSpec:
        """Also reads a target of an older router (per-target `weight` and `labels`, no `pool`):
        see `pools_of_old_targets` for how those become pools."""
        pool = data.get("pool")
        if pool is None:
            pool = _old_pool(data)
        return cls(
            service=data["service"],
            target_id=data["target_id"],
            host=data["host"],
            port=int(data["port"]),
            revision=data.get("revision", ""),
            pool=str(pool),
        )


def _old_pool(data: Mapping[str, Any]) -> str:
    # An older router weighted targets one by one and kept the engine's labels: preview targets
    # keep their pool, the others get one pool per revision (weight 0: out of rotation).
    labels = data.get("labels") or {}
    if labels.get("pool") == PREVIEW_POOL:
        return PREVIEW_POOL
    revision = str(data.get("revision", ""))
    return revision if int(data.get("weight", EVEN_WEIGHT)) > 0 else f"{revision}-out"


def pools_of_old_targets(items: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """The pool weights that give targets saved by an older router (per-target weights, no
    pools) the split they had: each pool weighs the sum of its targets' weights; equal weights
    everywhere need none (an even split)."""
    weights: dict[str, int] = {}
    seen: set[int] = set()
    for item in items:
        if "pool" in item:
            return {}  # saved by this version: its route carries its own pool weights
        pool = _old_pool(item)
        if pool == PREVIEW_POOL:
            continue
        weight = max(0, int(item.get("weight", EVEN_WEIGHT)))
        seen.add(weight)
        weights[pool] = weights.get(pool, 0) + weight
    return {} if len(seen) <= 1 and 0 not in seen else weights


def check_pool_weights(route: str, weights: Mapping[str, int]) -> dict[str, int]:
    """`weights` as plain ints, or RouterError saying what is wrong (every router checks alike)."""
    checked = {str(pool): int(weight) for pool, weight in weights.items()}
    if PREVIEW_POOL in checked:
        raise RouterError(
            f"route {route!r}: the pool {PREVIEW_POOL!r} takes preview requests only and has no "
            "weight; move its targets to another pool first"
        )
    bad = {pool: weight for pool, weight in checked.items() if weight < 0}
    if bad:
        raise RouterError(f"route {route!r}: pool weights must be >= 0, got {bad}")
    return checked


def pool_weight(pools: Mapping[str, int], pool: str) -> int:
    """The share of live traffic `pool` has on a route whose pool weights are `pools` (an even
    `EVEN_WEIGHT` for every pool while there are none; 0 for the preview pool)."""
    if pool == PREVIEW_POOL:
        return 0
    if not pools:
        return EVEN_WEIGHT
    return pools.get(pool, 0)


@dataclass(frozen=True)
class TargetStatus:
    """A target and what the router currently does with it."""

    spec: TargetSpec
    health: TargetHealth
    draining: bool
    inflight: int  # requests and open streams/WebSockets in flight to it now


@dataclass(frozen=True)
class RouteStatus:
    """A route and its targets."""

    route: RouteSpec
    targets: tuple[TargetStatus, ...]
    pools: Mapping[str, int] = field(default_factory=dict)  # the pool weights set; {}: even

    def pool_weight(self, pool: str) -> int:
        """The share of live traffic `pool` has now (see `pool_weight`)."""
        return pool_weight(self.pools, pool)

    def target_weights(self) -> dict[str, float]:
        """target id -> the weight the router gives it now: its pool's weight split evenly among
        the pool's healthy, not draining targets (0 for the others and the preview pool)."""
        live = [
            t
            for t in self.targets
            if t.health is TargetHealth.HEALTHY and not t.draining and not t.spec.preview
        ]
        counts: dict[str, int] = {}
        for target in live:
            counts[target.spec.pool] = counts.get(target.spec.pool, 0) + 1
        weights = {t.spec.target_id: 0.0 for t in self.targets}
        for target in live:
            pool = target.spec.pool
            weights[target.spec.target_id] = self.pool_weight(pool) / counts[pool]
        return weights

    @property
    def healthy_count(self) -> int:
        return sum(1 for t in self.targets if t.health is TargetHealth.HEALTHY and not t.draining)


@dataclass(frozen=True)
class DrainResult:
    """How a drain ended: everything finished, or `forced` streams were cut at the timeout."""

    target_id: str
    seconds: float
    finished: int  # requests/streams that completed while draining
    forced: int  # requests/streams closed when `drain_timeout` ran out


@runtime_checkable
class Router(Protocol):
    """Control of a router: the built-in proxy, HAProxy, or an AWS ALB."""

    name: str

    async def apply_route(self, route: RouteSpec) -> None:
        """Create or update a route; its targets are kept."""
        ...

    async def remove_route(self, service: str) -> None:
        """Delete a route and forget its targets (they are not drained: drain them first)."""
        ...

    async def add_target(self, target: TargetSpec, *, healthy: bool = False) -> None:
        """Add (or update: another address, another pool) a target. `healthy=True`: the caller
        has checked it, it takes its pool's share now; otherwise the router waits for
        `healthy_threshold` passing checks of its own."""
        ...

    async def set_pool_weights(self, service: str, weights: Mapping[str, int]) -> None:
        """Give each pool of `weights` its share of the route's live traffic (relative weights;
        0: out of rotation, its targets stay in the router) in one atomic step: no request sees
        some pools changed and others not. Pools not named keep their weight; a pool may be
        weighted before its first target joins. The preview pool has no weight."""
        ...

    async def drain_target(
        self, service: str, target_id: str, *, timeout: float | None = None
    ) -> DrainResult:
        """Stop sending new requests to the target, wait for in-flight ones (up to `timeout`,
        default the route's `drain_timeout`), close what is left, and remove the target."""
        ...

    async def status(self, service: str | None = None) -> list[RouteStatus]:
        """Routes and targets as the router sees them now."""
        ...


@runtime_checkable
class TrafficMetrics(Protocol):
    """A router that measures the requests it routes (the built-in proxy, HAProxy's counters).

    The canary analysis, the alarms, Prometheus, the rollups and the dashboard read these; a
    router without the capability makes every analysis inconclusive and every alarm lack data.
    """

    async def metrics(self, since: float | None = None) -> dict[str, Any]:
        """10 s datapoints per target from unix time `since` on, health per route and running
        totals, in the shape of `zerodown.metrics.series` (`datapoints`, `health`, `totals`)."""
        ...


@runtime_checkable
class RouterBackend(Protocol):
    """One router implementation as the control plane and `zerodown router` drive it: started
    once, reached by a `Router` client, restarted without dropping a request, stopped."""

    name: str

    async def open(self, state_dir: Path, listen: Sequence[str]) -> Router:
        """Make sure it runs and listens on every address of `listen` (an address it lacks is
        bound without dropping a request); a client for its routes and targets."""
        ...

    async def restart(self, state_dir: Path) -> list[int]:
        """Replace the running router process(es) hitlessly; the new pids."""
        ...

    async def stop(self, state_dir: Path) -> list[int]:
        """Stop it (in-flight requests finish first); the pids stopped, empty when none ran."""
        ...

    async def describe(self, state_dir: Path) -> list[dict[str, Any]]:
        """What runs, for `zerodown router status`: one dict per process with at least `pid`
        and `listen`; empty when it does not run."""
        ...
