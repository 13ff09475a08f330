"""Where each service x environment is served: router addresses, Host headers, path prefixes.

The built-in router matches a request by the address it arrived on, its Host header and the
longest path prefix. Every environment of a service has the same hosts and path, so environments
are told apart by address: an environment's `listen:`, else (unless its own `hosts:` set it
apart) the n-th environment in the file (counting from 0) listens on `router.listen`'s port + n.
`check_routes` refuses two routes the router could not tell apart, naming the field to change.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zerodown.domain.routes import route_name
from zerodown.routers.base import canonical_address

if TYPE_CHECKING:
    from zerodown.config.model import EnvironmentConfig, ZerodownConfig

LISTEN_EXAMPLE = "127.0.0.1:8080"


class RouteConflict(ValueError):
    """Two routes the router cannot tell apart; `loc` is the field of zerodown.yml to change."""

    def __init__(self, message: str, loc: tuple[str, ...]) -> None:
        super().__init__(message)
        self.loc = loc


def listen_list(value: Any) -> Any:
    """`listen:` as a tuple: a single `host:port` string is a list of one."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ValueError(
        f"write host:port or a list of them, e.g. `listen: {LISTEN_EXAMPLE}` or "
        f'`listen: ["{LISTEN_EXAMPLE}", "[::1]:8080"]`, not {value!r}'
    )


def check_address(item: str) -> str:
    """One `host:port` the router can bind: an IP address (or localhost) and a port 1-65535."""
    host, _, port = item.strip().rpartition(":")
    host = host.strip("[]")
    wrong = (
        f"write host:port with an IP address, e.g. {LISTEN_EXAMPLE} or 0.0.0.0:8080, not {item!r}"
    )
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(wrong)
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(wrong) from None
    return item.strip()


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = canonical_address(address).rpartition(":")
    return host.strip("[]"), int(port)


def _with_port(address: str, port: int) -> str:
    host, _ = _host_port(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def default_listen(
    router_listen: Sequence[str], environments: Mapping[str, EnvironmentConfig]
) -> dict[str, tuple[str, ...]]:
    """Each environment's addresses: its own `listen:`; else `router.listen` for the first
    environment in the file and for one with its own `hosts:`; else `router.listen`'s port + n
    for the n-th environment (counting from 0), so no two environments share an address."""
    result: dict[str, tuple[str, ...]] = {}
    for index, (name, env) in enumerate(environments.items()):
        if env.listen is not None:
            result[name] = env.listen
        elif index == 0 or env.hosts:
            result[name] = tuple(router_listen)
        else:
            ports = [_host_port(a)[1] + index for a in router_listen]
            if any(port > 65535 for port in ports):
                raise RouteConflict(
                    f"environment {name!r} would listen on port {max(ports)} (router.listen's "
                    f"port + {index}), past 65535: give it its own `listen:`",
                    ("environments", name),
                )
            result[name] = tuple(
                _with_port(a, p) for a, p in zip(router_listen, ports, strict=True)
            )
    return result


@dataclass(frozen=True)
class PlannedRoute:
    """One service in one environment as the router will match it."""

    service: str
    environment: str
    listen: frozenset[str]  # canonical host:port
    hosts: frozenset[str]  # lowercased, without port; empty: any host
    path: str  # the path prefix without a trailing '/' ("" for "/")

    @property
    def name(self) -> str:
        return route_name(self.service, self.environment)


def route_hosts(service_hosts: Sequence[str], env: EnvironmentConfig) -> tuple[str, ...]:
    """The Host headers of a service's route in an environment: the environment's `hosts:`
    when it has them, else the service's."""
    return tuple(env.hosts) if env.hosts is not None else tuple(service_hosts)


def planned_routes(config: ZerodownConfig) -> list[PlannedRoute]:
    """Every service x environment route, environments in file order, then services."""
    routes = []
    for env_name, env in config.environments.items():
        for service_name, service in config.services.items():
            hosts = route_hosts(service.hosts, env)
            routes.append(
                PlannedRoute(
                    service=service_name,
                    environment=env_name,
                    listen=frozenset(canonical_address(a) for a in env.listen or ()),
                    hosts=frozenset(h.lower() for h in hosts),
                    path=service.path_prefix.rstrip("/"),
                )
            )
    return routes


def router_addresses(config: ZerodownConfig) -> list[str]:
    """Every address the router must listen on: `router.listen`, then each environment's."""
    found = {canonical_address(a): a for a in config.router.listen}
    for env in config.environments.values():
        for address in env.listen or ():
            found.setdefault(canonical_address(address), address)
    return list(found.values())


def environment_listen(config: ZerodownConfig, environment: str) -> tuple[str, ...]:
    """Where an environment is served (its resolved `listen`)."""
    return config.environments[environment].listen or tuple(config.router.listen)


def _describe(route: PlannedRoute, address: str) -> str:
    hosts = ", ".join(sorted(route.hosts)) if route.hosts else "any host"
    return f"{address}, {hosts}, path {route.path or '/'}"


def _free_address(config: ZerodownConfig, near: str) -> str:
    used = {_host_port(a)[1] for a in router_addresses(config)} | {config.server.port}
    port = _host_port(near)[1] + 1
    while port in used and port < 65535:
        port += 1
    return _with_port(near, port)


def _overlap(a: str, b: str) -> bool:
    """Two different addresses one router cannot bind both of (a wildcard takes the port)."""
    (host_a, port_a), (host_b, port_b) = _host_port(a), _host_port(b)
    if port_a != port_b or host_a == host_b:
        return False
    return "::" in (host_a, host_b) or (
        "0.0.0.0" in (host_a, host_b) and ":" not in host_a + host_b
    )


def _env_loc(config: ZerodownConfig, environment: str, given: set[str]) -> tuple[str, ...]:
    env = config.environments[environment]
    if environment in given:
        return ("environments", environment, "listen")
    if env.hosts is not None:
        return ("environments", environment, "hosts")
    return ("environments", environment)


def check_routes(config: ZerodownConfig, given_listen: set[str]) -> None:
    """Raise `RouteConflict` for two routes that would shadow each other (same address, hosts
    that overlap, same path prefix) or addresses the router cannot bind together.
    `given_listen`: environments whose `listen:` is written in the file (the rest defaulted)."""
    _check_bindable(config, given_listen)
    routes = planned_routes(config)
    for later_index, later in enumerate(routes):
        for earlier in routes[:later_index]:
            shared = sorted(earlier.listen & later.listen)
            if earlier.listen and later.listen and not shared:
                continue
            if earlier.hosts != later.hosts and (
                not earlier.hosts or not later.hosts or not earlier.hosts & later.hosts
            ):
                continue  # different hosts; a host-bound route is matched before an any-host one
            if earlier.path != later.path:
                continue  # the longest prefix wins: no shadowing
            address = shared[0] if shared else "every address"
            what = (
                f"routes {earlier.name} and {later.name} would shadow each other "
                f"(both on {_describe(later, address)}; the router sends every request to one)"
            )
            if earlier.environment != later.environment:
                env = later.environment
                example = _free_address(config, shared[0] if shared else LISTEN_EXAMPLE)
                raise RouteConflict(
                    f"{what}: give environment {env!r} its own address, e.g. "
                    f"`listen: {example}`, or its own `hosts:`",
                    _env_loc(config, env, given_listen),
                )
            service = config.services[later.service]
            loc = ("services", later.service, "path_prefix")
            if service.hosts:
                loc = ("services", later.service, "hosts")
            raise RouteConflict(
                f"{what}: give service {later.service!r} its own `path_prefix:` "
                f"(e.g. /{later.service}) or `hosts:`",
                loc,
            )


def _check_bindable(config: ZerodownConfig, given_listen: set[str]) -> None:
    owners: list[tuple[str, str | None]] = [(a, None) for a in config.router.listen]
    for name, env in config.environments.items():
        owners += [(a, name) for a in env.listen or ()]
    server = config.server.listen
    for index, (address, env_name) in enumerate(owners):
        loc = ("router", "listen") if env_name is None else _env_loc(config, env_name, given_listen)
        for other, _ in owners[:index]:
            if _overlap(address, other):
                raise RouteConflict(
                    f"the router cannot listen on both {other} and {address} (a wildcard "
                    "address takes the port on every address): use the same address for both, "
                    "or another port",
                    loc,
                )
        if canonical_address(address) == canonical_address(server) or _overlap(address, server):
            raise RouteConflict(
                f"{address} is also server.listen (the API and dashboard): use another port, "
                f"e.g. `listen: {_free_address(config, address)}`",
                loc,
            )
