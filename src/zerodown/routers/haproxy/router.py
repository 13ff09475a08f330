"""`HaproxyRouter`: the `Router` seam (and `TrafficMetrics`) over HAProxy's Runtime API.

Targets become servers added at runtime (`add server`, `enable health`, `enable server`) and are
written into haproxy.cfg as well, so a reload keeps them; routes change the configuration and
reload it hitlessly. Pool weights become server weights (a pool's share split among its servers),
all changed in one Runtime API session. routes.json keeps what HAProxy cannot: target ids,
revisions, pools and pool weights.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from zerodown.config.router import HaproxyRouterConfig
from zerodown.errors import RouterError
from zerodown.routers.base import (
    DrainResult,
    RouteSpec,
    RouteStatus,
    TargetHealth,
    TargetSpec,
    TargetStatus,
    check_pool_weights,
    pool_weight,
)
from zerodown.routers.haproxy import process
from zerodown.routers.haproxy.config import (
    admin_address,
    render_config,
    server_name,
    server_options,
)
from zerodown.routers.haproxy.runtime_api import RuntimeApi
from zerodown.routers.haproxy.state import (
    HaproxyPaths,
    HaproxyState,
    RouteEntry,
    backend_name,
    is_preview,
    load_state,
    save_state,
    write_atomic,
)
from zerodown.routers.haproxy.stats import (
    MetricsSampler,
    Observed,
    ServerStat,
    parse_servers_conn,
    parse_show_stat,
)

log = logging.getLogger("zerodown.router.haproxy")

UP_TIMEOUT = 5.0  # how long add_target(healthy=True) waits for `show stat` to say UP
DRAIN_POLL = 0.1  # seconds between two `show servers conn` while draining
REMOVE_TIMEOUT = 5.0  # how long `del server` is retried while idle connections close


class HaproxyRouter:
    """The `Router` seam over one HAProxy (see the module docstring)."""

    name = "haproxy"

    def __init__(
        self, settings: HaproxyRouterConfig, paths: HaproxyPaths, state: HaproxyState
    ) -> None:
        self.settings = settings
        self.paths = paths
        self.state = state
        self.api = RuntimeApi(admin_address(settings, paths))
        self.sampler = MetricsSampler(paths.metrics)
        self._lock = asyncio.Lock()
        self._drains: dict[tuple[str, str], asyncio.Task[DrainResult]] = {}
        self._unchecked: set[tuple[str, str]] = set()  # added with healthy=False, not yet up
        self._retired: set[tuple[str, str]] = set()  # (backend, server) to delete when idle

    # -- the shared state ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def changing(self) -> AsyncIterator[HaproxyState]:
        """Hold this HAProxy's state for a change: one change at a time in this process (an
        asyncio lock) and across processes (an exclusive flock), on the state as routes.json
        has it now. Another process (a CLI deploy, a crashed one, `serve`) may have changed
        it since this client last looked; a change made on a stale copy would undo theirs."""
        async with self._lock:
            self.paths.create()
            fd = os.open(self.paths.root / "routes.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
                self.state = load_state(self.paths)
                yield self.state
            finally:
                os.close(fd)  # releases the flock

    def _current(self) -> HaproxyState:
        """The state as routes.json has it now, for reading (written by atomic renames)."""
        return load_state(self.paths)

    # -- configuration -------------------------------------------------------------------------

    def write_config(self) -> None:
        """Write routes.json and haproxy.cfg from the state (no reload)."""
        self.paths.create()
        save_state(self.paths, self.state)
        text = render_config(self.settings, self.paths, self.state, self.api.address)
        write_atomic(self.paths.config, text)
        if not self.paths.server_state.exists():
            write_atomic(self.paths.server_state, "1\n")

    async def reload(self) -> list[int]:
        """Save the servers' runtime state, rewrite the configuration and reload hitlessly (call it
        inside `changing()`: it writes the state as this client holds it);
        the new workers' pids."""
        with contextlib.suppress(RouterError):  # no running worker: nothing to carry over
            servers = await self.api.run("show servers state")
            write_atomic(self.paths.server_state, servers.rstrip("\n") + "\n")
        self.write_config()
        pids = await process.reload(self.settings.binary, self.paths)
        self._retired.clear()  # servers left out of the new configuration are gone with it
        return pids

    # -- routes --------------------------------------------------------------------------------

    async def apply_route(self, route: RouteSpec) -> None:
        """Create or update a route (a reload when it changed); its targets are kept."""
        if not route.path_prefix.startswith("/"):
            raise RouterError(f"path_prefix {route.path_prefix!r} must start with '/'")
        async with self.changing():
            entry = self.state.routes.get(route.service)
            if entry is not None and entry.spec == route:
                return
            if entry is None:
                self.state.routes[route.service] = RouteEntry(route)
            else:
                entry.spec = route
            await self.reload()

    async def remove_route(self, service: str) -> None:
        """Delete a route and its targets (a reload; drain the targets first)."""
        async with self.changing():
            self.state.route(service)
            del self.state.routes[service]
            await self.reload()

    # -- targets -------------------------------------------------------------------------------

    async def add_target(self, target: TargetSpec, *, healthy: bool = False) -> None:
        """Add a server (or update it: address, pool); `healthy=True`: forced up and verified UP
        in `show stat`, otherwise HAProxy's own checks decide (`rise` passes)."""
        async with self.changing():
            await self._delete_retired()
            entry = self.state.route(target.service)
            if target.target_id in entry.draining:
                raise RouterError(
                    f"target {target.target_id!r} of {target.service!r} is draining; "
                    "wait for the drain to finish before adding it again"
                )
            before = _weights(entry)
            old = entry.targets.get(target.target_id)
            old_pools = dict(entry.pools)
            backend = backend_name(target.service, preview=is_preview(target))
            server = server_name(target.target_id)
            entry.targets[target.target_id] = target
            entry.forget_empty_pools()  # its old pool, when it was the last one there
            commands: list[str] = []
            if old is not None and is_preview(old) == is_preview(target):
                if old.address != target.address:
                    commands.append(
                        f"set server {backend}/{server} addr {target.host} port {target.port}"
                    )
                commands += self._weight_commands(entry, before, {target.target_id})
                if healthy and entry.spec.health is not None:
                    commands.append(f"set server {backend}/{server} health up")
            elif entry.spec.sticky and not is_preview(target):
                # HAProxy 2.6 refuses `cookie` on `add server`: a sticky route's new server is
                # written into the configuration with its cookie and comes in by a hitless reload
                await self.reload()
                if healthy and entry.spec.health is not None:
                    commands.append(f"set server {backend}/{server} health up")
                commands += self._weight_commands(entry, before, set())
            else:
                commands += self._add_commands(entry, target, healthy=healthy)
                commands += self._weight_commands(entry, before, set())
            try:
                await self.api.session(commands)
            except RouterError:
                if old is None:
                    del entry.targets[target.target_id]
                else:
                    entry.targets[target.target_id] = old
                entry.pools = old_pools
                raise
            if old is not None and is_preview(old) != is_preview(target):
                await self._retire(backend_name(target.service, preview=is_preview(old)), server)
            if not healthy and entry.spec.health is not None:
                self._unchecked.add((backend, server))
            self.write_config()
        if healthy:
            await self._wait_up(backend, server)

    def _add_commands(self, entry: RouteEntry, target: TargetSpec, *, healthy: bool) -> list[str]:
        backend = backend_name(target.service, preview=is_preview(target))
        server = server_name(target.target_id)
        weight = entry.server_weights(preview=is_preview(target))[target.target_id]
        options = server_options(entry.spec, target, weight)
        commands = [f"add server {backend}/{server} {target.address} {options}"]
        if entry.spec.health is not None:
            commands.append(f"enable health {backend}/{server}")
            # Checked by the caller: up now; otherwise down until `rise` checks pass.
            commands.append(f"set server {backend}/{server} health {'up' if healthy else 'down'}")
        commands.append(f"enable server {backend}/{server}")
        return commands

    def _weight_commands(
        self, entry: RouteEntry, before: dict[bool, dict[str, int]], named: set[str]
    ) -> list[str]:
        """`set server ... weight` for every server whose HAProxy weight changed since `before`
        (`_weights` of the entry then: a pool's share is split among its servers, so one
        target's change may reweigh its pool-mates) or that is `named`; servers new in a
        backend were added with their weight."""
        commands = []
        for preview, weights in _weights(entry).items():
            was = before[preview]
            backend = backend_name(entry.spec.service, preview=preview)
            for target_id, weight in weights.items():
                if target_id in was and (was[target_id] != weight or target_id in named):
                    server = server_name(target_id)
                    commands.append(f"set server {backend}/{server} weight {weight}")
        return commands

    async def set_pool_weights(self, service: str, weights: Mapping[str, int]) -> None:
        """Every server weight the new pool shares change, sent in one Runtime API session
        (one write, applied by HAProxy in order without serving a request in between)."""
        async with self.changing():
            entry = self.state.route(service)
            checked = check_pool_weights(service, weights)
            before, old_pools = _weights(entry), dict(entry.pools)
            entry.pools.update(checked)
            commands = self._weight_commands(entry, before, set())
            try:
                await self.api.session(commands)
            except RouterError:
                entry.pools = old_pools
                raise
            self.write_config()

    async def drain_target(
        self, service: str, target_id: str, *, timeout: float | None = None
    ) -> DrainResult:
        """`state drain` (a sticky route: `state maint`, as HAProxy still sends persistent
        clients to a draining server), wait until `show servers conn` has no used connection
        (up to `timeout`), then `maint`, `shutdown sessions`, `del server`."""
        entry = self._current().route(service)
        if target_id not in entry.targets:
            raise RouterError(f"service {service!r} has no target {target_id!r} to drain")
        key = (service, target_id)
        task = self._drains.get(key)
        if task is None:
            wait = entry.spec.drain_timeout if timeout is None else timeout
            task = self._drains[key] = asyncio.get_running_loop().create_task(
                self._drain(entry, entry.targets[target_id], wait)
            )
            task.add_done_callback(lambda _: self._drains.pop(key, None))
        return await asyncio.shield(task)

    async def _drain(self, entry: RouteEntry, target: TargetSpec, timeout: float) -> DrainResult:
        backend = backend_name(target.service, preview=is_preview(target))
        server = server_name(target.target_id)
        where = f"{backend}/{server}"
        started = time.monotonic()
        answered_before = await self._answered(backend, server)
        mode = "maint" if entry.spec.sticky else "drain"
        async with self.changing() as state:
            commands = [f"set server {where} state {mode}"]
            now = state.routes.get(target.service)
            if now is not None:
                # its pool's share moves to the pool's other servers in the same session
                before = _weights(now)
                now.draining.add(target.target_id)
                commands += self._weight_commands(now, before, set())
            await self.api.session(commands)
            self.write_config()
        forced = 0
        deadline = started + timeout
        at_start: int | None = None
        while True:
            used = parse_servers_conn(await self.api.run(f"show servers conn {backend}"))
            old = await self._used_by_old_workers(backend, server)
            # None: the master did not answer (it re-executes during a reload): unknown, not 0.
            left = None if old is None else used.get(server, 0) + old
            at_start = left if at_start is None else at_start
            if left == 0:
                break
            if time.monotonic() >= deadline:
                forced = left if left is not None else at_start or 0
                break
            await asyncio.sleep(DRAIN_POLL)  # no event from HAProxy: poll with a deadline
        answered_after = await self._answered(backend, server)
        async with self.changing() as state:
            await self.api.session([f"set server {where} state maint"])
            await self.api.run(f"shutdown sessions server {where}")
            if forced:  # a reload's old workers still serve some of them: cut those too
                await self._cut_in_old_workers(backend, server)
            now = state.routes.get(target.service)
            if now is not None:
                now.draining.discard(target.target_id)
                if now.targets.get(target.target_id) == target:
                    del now.targets[target.target_id]
                    now.forget_empty_pools()
            self.write_config()
        await self._remove_server(backend, server)
        return DrainResult(
            target_id=target.target_id,
            seconds=round(time.monotonic() - started, 3),
            # Responses counted while draining, or the connections in use at its start that
            # were not cut (a stream's response is counted when its headers go out).
            finished=max(answered_after - answered_before, (at_start or 0) - forced, 0),
            forced=forced,
        )

    async def _used_by_old_workers(self, backend: str, server: str) -> int | None:
        """Connections to the server that workers replaced by a reload still use (they finish
        what they serve, up to hard-stop-after): a drain waits for them too. None when it
        cannot be told (the master re-executes itself during a reload and does not answer)."""
        try:
            procs = await process.show_proc(self.paths)
        except RouterError:
            return None
        current = {p.pid for p in process.current_workers(procs)}
        used = 0
        for proc in procs:
            if proc.kind != "worker" or proc.pid in current:
                continue
            try:
                master = process.master_cli(self.paths)
                text = await master.run_once(f"@!{proc.pid} show servers conn {backend}")
            except RouterError:
                if process.alive(proc.pid):
                    return None
                continue  # it exited meanwhile: it holds nothing
            used += parse_servers_conn(text).get(server, 0)
        return used

    async def _cut_in_old_workers(self, backend: str, server: str) -> None:
        """End the server's streams that the workers a reload replaced still serve: a drain that
        timed out cuts them at its timeout, not when the app is stopped. (`shutdown sessions
        server` answers "Proxy is disabled" in an old worker: its sessions go one by one.)"""
        try:
            procs = await process.show_proc(self.paths)
        except RouterError:
            return
        current = {p.pid for p in process.current_workers(procs)}
        master = process.master_cli(self.paths)
        for proc in procs:
            if proc.kind != "worker" or proc.pid in current:
                continue
            with contextlib.suppress(RouterError):
                sessions = await master.run_once(f"@!{proc.pid} show sess", check=False)
                for line in sessions.splitlines():
                    if f" be={backend} srv={server} " in line:
                        session = line.split(":", 1)[0]
                        await master.run_once(f"@!{proc.pid} shutdown session {session}")

    async def _answered(self, backend: str, server: str) -> int:
        row = (await self._rows()).get((backend, server))
        return row.requests if row else 0

    async def _remove_server(self, backend: str, server: str) -> None:
        """`del server`, retried while HAProxy still holds (idle) connections to it."""
        deadline = time.monotonic() + REMOVE_TIMEOUT
        while True:
            answer = await self.api.run(f"del server {backend}/{server}", check=False)
            if answer.startswith("Server deleted") or "no such server" in answer.lower():
                return
            if time.monotonic() >= deadline:
                log.warning("haproxy: %s/%s not deleted yet (%s)", backend, server, answer)
                self._retired.add((backend, server))
                return
            await asyncio.sleep(DRAIN_POLL)  # idle connections close on their own: poll

    async def _retire(self, backend: str, server: str) -> None:
        """Take a server out (it moved to the other pool) without cutting what it serves."""
        await self.api.run(f"set server {backend}/{server} state maint", check=False)
        answer = await self.api.run(f"del server {backend}/{server}", check=False)
        if not answer.startswith("Server deleted"):
            self._retired.add((backend, server))

    async def _delete_retired(self) -> None:
        for backend, server in list(self._retired):
            answer = await self.api.run(f"del server {backend}/{server}", check=False)
            if answer.startswith("Server deleted") or "no such" in answer.lower():
                self._retired.discard((backend, server))

    async def _wait_up(self, backend: str, server: str) -> None:
        deadline = time.monotonic() + UP_TIMEOUT
        while True:
            row = (await self._rows()).get((backend, server))
            if row is not None and row.health is TargetHealth.HEALTHY:
                return
            if time.monotonic() >= deadline:
                status = row.status if row else "missing"
                raise RouterError(
                    f"HAProxy does not report {backend}/{server} UP within {UP_TIMEOUT:.0f} s "
                    f"(its status: {status}); does the route's health check pass on it?"
                )
            await asyncio.sleep(0.05)  # HAProxy publishes no event: poll with a deadline

    # -- reading -------------------------------------------------------------------------------

    async def _rows(self) -> dict[tuple[str, str], ServerStat]:
        text = await self.api.run("show stat")
        return {(r.backend, r.server): r for r in parse_show_stat(text)}

    def _observed(self, rows: dict[tuple[str, str], ServerStat]) -> list[Observed]:
        found = []
        for service, entry in self._current().routes.items():
            for target in entry.targets.values():
                preview = is_preview(target)
                row = rows.get(
                    (backend_name(service, preview=preview), server_name(target.target_id))
                )
                if row is None:
                    continue
                draining = target.target_id in entry.draining or row.draining
                healthy = row.health is TargetHealth.HEALTHY
                weighted = pool_weight(entry.pools, target.pool) > 0
                found.append(
                    Observed(
                        service=service,
                        target=target.target_id,
                        revision=target.revision,
                        stat=row,
                        live=not preview and not draining,
                        serving=healthy and not draining and not preview and weighted,
                    )
                )
        return found

    def _health(self, backend: str, server: str, row: ServerStat | None) -> TargetHealth:
        if row is None:
            return TargetHealth.UNKNOWN
        health = row.health
        key = (backend, server)
        if health is TargetHealth.HEALTHY:
            self._unchecked.discard(key)
        elif key in self._unchecked:
            return TargetHealth.UNKNOWN  # not yet checked `rise` times
        return health

    async def status(self, service: str | None = None) -> list[RouteStatus]:
        """Routes and targets as HAProxy reports them now (`show stat`: UP/DOWN/MAINT/DRAIN,
        `scur` as in flight)."""
        state = self._current()  # what every client has set, not what this one remembers
        entries = [state.route(service)] if service is not None else list(state.routes.values())
        rows = await self._rows()
        result = []
        for entry in entries:
            targets = []
            for target in entry.targets.values():
                backend = backend_name(target.service, preview=is_preview(target))
                server = server_name(target.target_id)
                row = rows.get((backend, server))
                draining = target.target_id in entry.draining or (row is not None and row.draining)
                targets.append(
                    TargetStatus(
                        spec=target,
                        health=self._health(backend, server, row),
                        draining=draining,
                        inflight=row.scur if row else 0,
                    )
                )
            result.append(
                RouteStatus(route=entry.spec, targets=tuple(targets), pools=dict(entry.pools))
            )
        return result

    async def metrics(self, since: float | None = None) -> dict[str, Any]:
        """10 s datapoints per target from HAProxy's counters (see `stats` for what is
        approximated), health per route and running totals, as the built-in router's."""
        info, stat = await self.api.session(["show info", "show stat"])
        worker = 0
        for line in info.splitlines():
            if line.startswith("Pid:"):
                worker = int(line.split(":", 1)[1].strip() or 0)
        rows = {(r.backend, r.server): r for r in parse_show_stat(stat)}
        observed = self._observed(rows)
        self.sampler.observe(worker, observed)
        report = self.sampler.snapshot(since)
        live = {(o.service, o.target): o for o in observed}
        totals = []
        for point in report["totals"]:
            seen = live.pop((point["service"], point["target"]), None)
            point["inflight"] = seen.stat.scur if seen else 0
            point["health"] = seen.stat.health.value if seen else "gone"
            totals.append(point)
        for (service, target), seen in live.items():
            totals.append(
                {
                    "service": service,
                    "revision": seen.revision,
                    "target": target,
                    "requests": 0,
                    "inflight": seen.stat.scur,
                    "health": seen.stat.health.value,
                }
            )
        report["totals"] = totals
        return report


def _weights(entry: RouteEntry) -> dict[bool, dict[str, int]]:
    """The HAProxy weights of the route's live (False) and preview (True) servers now."""
    return {preview: entry.server_weights(preview=preview) for preview in (False, True)}
