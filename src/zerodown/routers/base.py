"""The `Router` seam: how the control plane tells a router where a service's traffic goes.

A router owns routes (which requests belong to which service) and targets (the instances of a
service that may receive them). Targets carry weights; a target receives traffic only while it is
healthy, not draining, and its weight is above zero. Targets labelled `pool=preview` get only the
requests that carry the route's preview header, and those requests get only them (blue/green).
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from zerodown.health.spec import HealthCheckSpec, TargetHealth

Balance = Literal["least_inflight", "round_robin"]
PREVIEW_POOL = "preview"  # the `pool` label of targets that only preview requests reach
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
    # Requests carrying this header reach only targets labelled pool=preview (blue/green).
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
    """One instance as the router sees it."""

    service: str
    target_id: str  # the instance id
    host: str
    port: int
    revision: str = ""
    weight: int = 100  # relative; 0 takes the target out of rotation without draining it
    labels: dict[str, str] = field(default_factory=dict)  # pool=preview: preview traffic only

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "target_id": self.target_id,
            "host": self.host,
            "port": self.port,
            "revision": self.revision,
            "weight": self.weight,
            "labels": dict(self.labels),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TargetSpec:
        return cls(
            service=data["service"],
            target_id=data["target_id"],
            host=data["host"],
            port=int(data["port"]),
            revision=data.get("revision", ""),
            weight=int(data.get("weight", 100)),
            labels=dict(data.get("labels", {})),
        )


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
        """Add (or update) a target. `healthy=True`: the caller has checked it, send traffic now;
        otherwise the router waits for `healthy_threshold` passing checks of its own."""
        ...

    async def set_weights(self, service: str, weights: dict[str, int]) -> None:
        """Change several targets' weights in one atomic step."""
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
