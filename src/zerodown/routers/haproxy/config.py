"""haproxy.cfg from zerodown's routes and targets.

One frontend per listen address; per route, in the built-in router's match order (longest path
prefix first, host-bound and address-bound first), a `use_backend` on Host (port ignored) and path
prefix (on a segment boundary). Each route has a live backend and a preview backend that only
requests carrying the route's preview header reach (blue/green). Targets are written as servers
with their current weight and drain state, so a reload keeps servers added at runtime; the
server-state file carries over what the Runtime API changed since (weights, drain, maint, health).
"""

from __future__ import annotations

from collections.abc import Sequence

from zerodown.config.router import HaproxyRouterConfig
from zerodown.health.spec import HealthCheckSpec
from zerodown.routers.base import STICKY_COOKIE, RouteSpec, TargetSpec
from zerodown.routers.haproxy.runtime_api import SocketAddress
from zerodown.routers.haproxy.state import (
    HaproxyPaths,
    HaproxyState,
    RouteEntry,
    backend_name,
    haproxy_name,
    is_preview,
)

# A config-file server inherits these idle-connection settings from HAProxy's defaults; a server
# made by `add server` (2.6) starts with both at 0 and closes its server connection after every
# response (one TCP connect per request: 3x the CPU per request). Written on every server line,
# so a server is the same whether it came from `add server` or from the file after a reload.
IDLE_POOL_OPTIONS = "pool-max-conn -1 pool-purge-delay 5s"
NO_ROUTE_BACKEND = "zerodown_no_route"
_BALANCE = {"least_inflight": "leastconn", "round_robin": "roundrobin"}


def ms(seconds: float) -> str:
    """A duration in HAProxy's syntax (whole milliseconds, at least 1)."""
    return f"{max(1, round(seconds * 1000))}ms"


def server_name(target_id: str) -> str:
    """The HAProxy server of a target (its id in HAProxy's alphabet)."""
    return haproxy_name(target_id)


def frontend_name(address: str) -> str:
    """The frontend of one listen address."""
    return "listen_" + haproxy_name(address.replace("[", "").replace("]", ""))


def admin_address(settings: HaproxyRouterConfig, paths: HaproxyPaths) -> SocketAddress:
    """Where the Runtime API listens: `admin:` (TCP) if set, else the unix socket in the
    state dir."""
    return (
        SocketAddress(tcp=settings.admin)
        if settings.admin
        else SocketAddress(unix=str(paths.admin_socket))
    )


def stats_socket_line(admin: SocketAddress) -> str:
    """The `stats socket` line of the global section (level admin, listeners exposed so a
    reload takes them over)."""
    if admin.tcp:
        return f"stats socket ipv4@{admin.tcp} level admin expose-fd listeners"
    return f"stats socket {admin.unix} mode 600 level admin expose-fd listeners"


def check_options(health: HealthCheckSpec | None) -> list[str]:
    """A backend's health-check lines: `option httpchk` + send/expect for http checks; a TCP
    connect check for `tcp` and `command` checks (HAProxy cannot run a command)."""
    if health is None:
        return []
    lines = [f"timeout check {ms(health.timeout)}"]
    if health.kind != "http":
        return lines
    lines.append("option httpchk")
    send = f"http-check send meth GET uri {_word(health.path)} ver HTTP/1.1"
    send += f" hdr Host {_word(health.host_header or 'localhost')}"
    lines.append(send)
    statuses = health.statuses or (200,)
    if len(statuses) == 1:
        lines.append(f"http-check expect status {statuses[0]}")
    else:
        lines.append(f"http-check expect rstatus ^({'|'.join(str(s) for s in statuses)})$")
    return lines


def server_options(route: RouteSpec, target: TargetSpec, weight: int) -> str:
    """The keywords after `server <name> <addr>` (also used by `add server`): the weight, the
    health check, a sticky route's live servers their revision as the `zerodown_rev` cookie
    value, and the idle connection pool (IDLE_POOL_OPTIONS)."""
    words = [f"weight {weight}"]
    health = route.health
    if health is not None:
        words.append(
            f"check inter {ms(health.interval)} fastinter {ms(max(health.start_interval, 0.1))}"
            f" rise {max(1, health.healthy_threshold)} fall {max(1, health.unhealthy_threshold)}"
        )
    if route.sticky and not is_preview(target):
        words.append(f"cookie {_word(target.revision or target.target_id)}")
    words.append(IDLE_POOL_OPTIONS)
    return " ".join(words)


def _word(value: str) -> str:
    # One HAProxy word: quoted when it holds spaces or quotes.
    if value and all(c.isalnum() or c in "/_.:-~%?=&+,@" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _route_order(entries: Sequence[RouteEntry]) -> list[RouteEntry]:
    # The built-in router's match order (table._reorder): longest prefix, then host-bound first.
    return sorted(
        entries,
        key=lambda e: (
            len(e.spec.path_prefix.rstrip("/")),
            bool(e.spec.hosts),
            bool(e.spec.listen),
        ),
        reverse=True,
    )


def _frontend(address: str, entries: Sequence[RouteEntry]) -> list[str]:
    lines = [f"frontend {frontend_name(address)}", f"    bind {address}"]
    lines.append("    http-request set-var(txn.host) req.hdr(host),field(1,:),lower")
    for index, entry in enumerate(_route_order(entries)):
        spec = entry.spec
        if spec.listen and address not in spec.listen:
            continue
        acl = f"r{index}"
        conditions = []
        if spec.hosts:
            hosts = " ".join(_word(h.lower()) for h in spec.hosts)
            lines.append(f"    acl {acl}_host var(txn.host) -m str {hosts}")
            conditions.append(f"{acl}_host")
        if spec.path_prefix not in ("", "/"):
            # Under the prefix on a segment boundary: "/api" matches /api and /api/..., not /apix
            # (two lines of one ACL name are ORed).
            under = spec.path_prefix if spec.path_prefix.endswith("/") else spec.path_prefix + "/"
            lines.append(f"    acl {acl}_path path -m beg {_word(under)}")
            lines.append(f"    acl {acl}_path path -m str {_word(spec.path_prefix.rstrip('/'))}")
            conditions.append(f"{acl}_path")
        lines.append(f"    acl {acl}_preview req.hdr({_word(spec.preview_header)}) -m found")
        when = " ".join(conditions)
        preview = backend_name(spec.service, preview=True)
        lines.append(f"    use_backend {preview} if {when + ' ' if when else ''}{acl}_preview")
        live = backend_name(spec.service)
        lines.append(f"    use_backend {live}{' if ' + when if when else ''}")
    lines.append(f"    default_backend {NO_ROUTE_BACKEND}")
    return lines


def _backend(entry: RouteEntry, *, preview: bool, balance_default: str) -> list[str]:
    spec = entry.spec
    name = backend_name(spec.service, preview=preview)
    lines = [f"backend {name}", f"    balance {_BALANCE.get(spec.balance, balance_default)}"]
    # As the built-in router: a request that may change something (POST, PUT, ...) is never
    # sent twice; only a failed connect is retried for it (the app never saw the request).
    lines.append("    http-request disable-l7-retry if !METH_GET !METH_OPTIONS")
    lines += [f"    {line}" for line in check_options(spec.health)]
    if spec.sticky and not preview:
        lines.append(f"    cookie {STICKY_COOKIE} insert indirect nocache")
    members = [t for t in entry.targets.values() if is_preview(t) == preview]
    weights = entry.server_weights(preview=preview)  # pool shares per server (state.py)
    for target in members:
        line = (
            f"    server {server_name(target.target_id)} {target.address} "
            f"{server_options(spec, target, weights[target.target_id])}"
        )
        lines.append(line)
    return lines


def render_config(
    settings: HaproxyRouterConfig, paths: HaproxyPaths, state: HaproxyState, admin: SocketAddress
) -> str:
    """The whole haproxy.cfg for `state` (listen addresses, routes and targets)."""
    balance_default = _BALANCE[settings.balance]
    lines = [
        "# Written by zerodown: edits are lost at the next change. See `zerodown router status`.",
        "global",
        "    master-worker",
        f"    {stats_socket_line(admin)}",
        f"    server-state-file {paths.server_state}",
        f"    hard-stop-after {ms(settings.hard_stop_after)}",
        f"    maxconn {settings.maxconn}",
        "",
        "defaults",
        "    mode http",
        "    load-server-state-from-file global",
        "    option forwardfor",
        "    option redispatch 1",
        # A reload's old worker keeps idle client connections open until their next request
        # and answers it with `Connection: close`, instead of closing them under a client that
        # is sending one (seen as "server disconnected" under load during a reload).
        "    option idle-close-on-response",
        "    retries 3",
        # Retry a request that got no answer at all: the connect failed, the instance died under
        # it (kill -9, crash; `redispatch` sends it to another server), or the app closed the
        # reused idle connection it went out on; GET/HEAD/OPTIONS only (each backend disables
        # L7 retries for the rest), as the built-in router does. HAProxy 2.6 pays for it with a
        # copy of every request (a 16 KB buffer, ~2 us of ~13 us per request here:
        # benchmarks/RESULTS.md).
        "    retry-on conn-failure empty-response",
        f"    timeout connect {ms(settings.connect_timeout)}",
        f"    timeout server {ms(settings.response_timeout)}",
        "    timeout client 60s",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 10s",
        "    timeout queue 30s",
        "    timeout tunnel 1h",  # WebSockets: `hard-stop-after` bounds them across reloads
        "",
    ]
    entries = list(state.routes.values())
    for address in state.listen:
        lines += [*_frontend(address, entries), ""]
    for entry in entries:
        lines += [*_backend(entry, preview=False, balance_default=balance_default), ""]
        lines += [*_backend(entry, preview=True, balance_default=balance_default), ""]
    lines += [
        f"backend {NO_ROUTE_BACKEND}",
        '    http-request return status 404 content-type text/plain string "no route\\n"',
        "",
    ]
    return "\n".join(lines)
