"""The HAProxy backend's files under `<state_dir>/haproxy/` (mode 0700), and the routes state.

haproxy.cfg     written by zerodown (config.py) before every start and reload
master.sock     the master CLI (`show proc`, `reload`)
admin.sock      the Runtime API (mode 0600, level admin) unless `admin:` names a TCP address
haproxy.pid     the master's pid
server-state    `show servers state`, written before each reload (drain/maint and weights)
routes.json     what HAProxy needs to rebuild its configuration: routes, servers (target ids,
                addresses, revisions for the sticky cookie, pools) and pool weights; HAProxy
                knows servers, not pools, so this is also what status() joins them with
metrics.json    recent 10 s datapoints, so a new control plane sees the last periods
haproxy.log     HAProxy's own output while it starts
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zerodown.errors import RouterError
from zerodown.routers.base import (
    EVEN_WEIGHT,
    RouteSpec,
    TargetSpec,
    check_pool_weights,
    pools_of_old_targets,
)

STATE_VERSION = 1
MAX_WEIGHT = 256  # HAProxy's largest server weight
PREVIEW_SUFFIX = "__preview"  # the preview backend of route `web.prod` is `web.prod__preview`
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")


def haproxy_name(name: str) -> str:
    """`name` in HAProxy's alphabet (letters, digits, `_.:-`); other characters become `_`."""
    return _NAME_UNSAFE.sub("_", name) or "_"


def backend_name(route: str, *, preview: bool = False) -> str:
    """The HAProxy backend of a route (`web.prod`), or of its preview pool."""
    return haproxy_name(route) + (PREVIEW_SUFFIX if preview else "")


def is_preview(target: TargetSpec) -> bool:
    """Whether the target belongs to the route's preview pool (its own backend)."""
    return target.preview


@dataclass(frozen=True)
class HaproxyPaths:
    """Where one HAProxy keeps its configuration, sockets, pid and state."""

    root: Path

    @classmethod
    def under(cls, state_dir: Path) -> HaproxyPaths:
        """The HAProxy directory of a zerodown state directory."""
        return cls(Path(state_dir) / "haproxy")

    @property
    def config(self) -> Path:
        """haproxy.cfg."""
        return self.root / "haproxy.cfg"

    @property
    def master_socket(self) -> Path:
        """The master CLI."""
        return self.root / "master.sock"

    @property
    def admin_socket(self) -> Path:
        """The Runtime API's unix socket (when `admin:` is not set)."""
        return self.root / "admin.sock"

    @property
    def pidfile(self) -> Path:
        """The master's pid."""
        return self.root / "haproxy.pid"

    @property
    def server_state(self) -> Path:
        """`show servers state`, loaded by the next process after a reload."""
        return self.root / "server-state"

    @property
    def routes(self) -> Path:
        """Routes and targets as zerodown set them."""
        return self.root / "routes.json"

    @property
    def metrics(self) -> Path:
        """Recent datapoints."""
        return self.root / "metrics.json"

    @property
    def log(self) -> Path:
        """HAProxy's output during start."""
        return self.root / "haproxy.log"

    def create(self) -> None:
        """Make the directory, private to this user (0700)."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)


@dataclass
class RouteEntry:
    """One route and its targets (by target id), as zerodown set them."""

    spec: RouteSpec
    targets: dict[str, TargetSpec] = field(default_factory=dict)
    draining: set[str] = field(default_factory=set)  # ids being drained: written as `drain`
    pools: dict[str, int] = field(default_factory=dict)  # pool weights; empty: an even split

    def forget_empty_pools(self) -> None:
        """Drop the weights of pools no target is in any more."""
        used = {t.pool for t in self.targets.values()}
        for pool in [p for p in self.pools if p not in used]:
            del self.pools[pool]

    def server_weights(self, *, preview: bool) -> dict[str, int]:
        """HAProxy weights (0..256) of the servers of the live (or preview) backend: each pool's
        share split evenly among its servers that are not draining (draining ones: 0), in the
        pools' proportions. Without pool weights (and in the preview backend) all alike.
        HAProxy spreads a DOWN server's share over the backend's other servers by weight (the
        built-in router keeps it within the pool): zerodown's drains reweigh the pool at once."""
        members = [t for t in self.targets.values() if t.preview == preview]
        if preview or not self.pools:
            return {
                t.target_id: 0 if t.target_id in self.draining else EVEN_WEIGHT for t in members
            }
        counts: dict[str, int] = {}
        for target in members:
            if target.target_id not in self.draining:
                counts[target.pool] = counts.get(target.pool, 0) + 1
        shares = {
            t.target_id: 0.0
            if t.target_id in self.draining
            else self.pools.get(t.pool, 0) / counts[t.pool]
            for t in members
        }
        return scaled_weights(shares)


@dataclass
class HaproxyState:
    """What zerodown told HAProxy: listen addresses, routes, targets (routes.json)."""

    listen: list[str] = field(default_factory=list)
    routes: dict[str, RouteEntry] = field(default_factory=dict)

    def route(self, name: str) -> RouteEntry:
        """The route `name`, or RouterError saying to apply it first."""
        entry = self.routes.get(name)
        if entry is None:
            raise RouterError(f"no route for service {name!r}: apply the route first")
        return entry

    def to_json(self) -> dict[str, Any]:
        """routes.json's content."""
        return {
            "version": STATE_VERSION,
            "listen": list(self.listen),
            "routes": [
                {
                    "route": entry.spec.to_dict(),
                    "pools": dict(entry.pools),
                    "targets": [t.to_dict() for t in entry.targets.values()],
                    "draining": sorted(entry.draining),
                }
                for entry in self.routes.values()
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: Path) -> HaproxyState:
        """The inverse of `to_json`; RouterError naming the file when it is malformed."""
        if data.get("version", STATE_VERSION) != STATE_VERSION:
            raise RouterError(f"{where}: unknown state version {data.get('version')!r}")
        try:
            state = cls(listen=[str(a) for a in data.get("listen", [])])
            for item in data.get("routes", []):
                spec = RouteSpec.from_dict(item["route"])
                items = item.get("targets", [])
                targets = [TargetSpec.from_dict(t) for t in items]
                # routes.json of an older zerodown: per-target weights and labels, no pools
                pools = item.get("pools")
                if pools is None:
                    pools = pools_of_old_targets(items)
                entry = RouteEntry(
                    spec,
                    {t.target_id: t for t in targets},
                    set(item.get("draining", [])),
                    check_pool_weights(spec.service, pools),
                )
                entry.forget_empty_pools()
                state.routes[spec.service] = entry
        except (KeyError, TypeError, ValueError) as exc:
            raise RouterError(f"{where} is malformed ({exc!r}); fix or delete it") from exc
        return state


def scaled_weights(shares: dict[str, float]) -> dict[str, int]:
    """Server weights for HAProxy (integers 0..256) in the proportions of `shares`: kept as they
    are when they already are such integers, else scaled so the largest is 256 (a positive
    share stays at least 1)."""
    top = max(shares.values(), default=0.0)
    if top <= MAX_WEIGHT and all(float(v).is_integer() for v in shares.values()):
        return {k: int(v) for k, v in shares.items()}
    return {k: 0 if v <= 0 else max(1, round(v * MAX_WEIGHT / top)) for k, v in shares.items()}


def load_state(paths: HaproxyPaths) -> HaproxyState:
    """routes.json, or an empty state when there is none yet."""
    try:
        data = json.loads(paths.routes.read_text())
    except FileNotFoundError:
        return HaproxyState()
    except ValueError as exc:
        raise RouterError(f"{paths.routes} is not JSON ({exc}); fix or delete it") from exc
    return HaproxyState.from_json(data, paths.routes)


def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace `path` with `text` in one rename (a crash leaves the old or the new file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_state(paths: HaproxyPaths, state: HaproxyState) -> None:
    """Write routes.json atomically."""
    write_atomic(paths.routes, json.dumps(state.to_json(), indent=1, sort_keys=True))
