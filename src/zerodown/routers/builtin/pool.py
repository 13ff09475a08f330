"""A pool of built-in router workers: N daemons on the same addresses, one `Router` over them.

The router is one Python process and CPU-bound; `router.workers: N` runs N of today's daemons,
each with its own control socket and state (worker 0 in `<state_dir>/router/` as ever, worker k
in `<state_dir>/router-<k>/router/`), all bound with SO_REUSEPORT so the kernel spreads new
connections across them. `WorkerPoolRouter` sends every mutation to all workers at once and merges
what they report. Worker 0's `state.json` is the table of record: a worker that starts is seeded
with a copy of it, so a pool grown from one router serves the same routes from its first request.
With `workers: 1` none of this is used: callers keep `BuiltinRouter` and its helpers.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from zerodown.errors import RouterError, RouterUnavailable
from zerodown.metrics.series import STATUS_CLASSES, Histogram
from zerodown.routers.base import (
    DrainResult,
    RouteSpec,
    RouteStatus,
    TargetHealth,
    TargetSpec,
    TargetStatus,
)
from zerodown.routers.builtin.client import (
    DEFAULT_TIMEOUT,
    BuiltinRouter,
    missing_addresses,
    restart_router,
    start_router_process,
    stop_router,
)
from zerodown.routers.builtin.handoff import parse_listen
from zerodown.routers.builtin.state import RouterPaths, read_pid_file, write_atomic

MAX_WORKERS = 16  # the bound of `router.workers` in zerodown.yml
_WORKER_DIR = re.compile(r"router-(\d+)")

T = TypeVar("T")


def worker_state_dir(state_dir: Path, index: int) -> Path:
    """The state directory whose `router/` holds worker `index` (worker 0: today's own)."""
    return Path(state_dir) if index == 0 else Path(state_dir) / f"router-{index}"


def worker_dirs(state_dir: Path) -> list[Path]:
    """Worker 0's state directory and every worker directory that exists, in worker order."""
    found: dict[int, Path] = {}
    with contextlib.suppress(FileNotFoundError):
        for entry in Path(state_dir).iterdir():
            match = _WORKER_DIR.fullmatch(entry.name)
            if match and entry.is_dir() and 0 < int(match.group(1)) <= MAX_WORKERS:
                found[int(match.group(1))] = entry
    return [Path(state_dir), *(found[k] for k in sorted(found))]


def running_workers(state_dir: Path) -> int:
    """How many workers this state directory has running (1 for a lone router or none at all)."""
    alive = [
        d for d in worker_dirs(state_dir)[1:] if read_pid_file(RouterPaths.under(d).pid) is not None
    ]
    return 1 + len(alive)


# -- merging what the workers report -------------------------------------------------------------


def merge_health(values: Sequence[TargetHealth]) -> TargetHealth:
    """HEALTHY only if every worker sees it healthy; UNHEALTHY if any does; else UNKNOWN.

    Each worker probes on its own, so they agree within one check interval; until then the pool
    reports the cautious answer (a deploy waits for the slowest worker before moving traffic)."""
    if values and all(v is TargetHealth.HEALTHY for v in values):
        return TargetHealth.HEALTHY
    if TargetHealth.UNHEALTHY in values:
        return TargetHealth.UNHEALTHY
    return TargetHealth.UNKNOWN


def merge_route_statuses(per_worker: Sequence[Sequence[RouteStatus]]) -> list[RouteStatus]:
    """One status per route: in-flight summed, draining if any worker drains, health merged,
    pool weights as the first worker reports them (every mutation reaches all workers).

    A target one worker does not know counts as UNKNOWN there (that worker cannot route to it)."""
    routes: dict[str, RouteSpec] = {}
    pools: dict[str, Mapping[str, int]] = {}
    targets: dict[str, dict[str, list[TargetStatus]]] = {}
    for statuses in per_worker:
        for status in statuses:
            routes.setdefault(status.route.service, status.route)
            pools.setdefault(status.route.service, status.pools)
            bucket = targets.setdefault(status.route.service, {})
            for target in status.targets:
                bucket.setdefault(target.spec.target_id, []).append(target)
    merged = []
    for service, route in routes.items():
        items = []
        for seen in targets[service].values():
            healths = [t.health for t in seen]
            healths += [TargetHealth.UNKNOWN] * (len(per_worker) - len(seen))
            items.append(
                TargetStatus(
                    spec=seen[0].spec,
                    health=merge_health(healths),
                    draining=any(t.draining for t in seen),
                    inflight=sum(t.inflight for t in seen),
                )
            )
        merged.append(RouteStatus(route=route, targets=tuple(items), pools=dict(pools[service])))
    return merged


def merge_drain_results(results: Sequence[DrainResult]) -> DrainResult:
    """One drain over all workers: counts summed, seconds the longest worker's."""
    return DrainResult(
        target_id=results[0].target_id,
        seconds=max(r.seconds for r in results),
        finished=sum(r.finished for r in results),
        forced=sum(r.forced for r in results),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def merge_points(points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Datapoints (or totals) of one target from several workers as one: counters and in-flight
    summed, histograms added (so the merged percentiles are as exact as one worker's)."""
    merged = dict(points[0])
    for name in ("requests", "upstream_errors", "inflight", *STATUS_CLASSES):
        if any(name in p for p in points):
            merged[name] = sum(int(p.get(name, 0)) for p in points)
    if any("histogram" in p for p in points):
        histogram = Histogram()
        for point in points:
            histogram.merge(Histogram.from_json(point.get("histogram")))
        latencies = [p.get("latency_ms") or {} for p in points]
        total = sum(float(lat.get("sum") or 0.0) for lat in latencies)
        maxes = [float(lat["max"]) for lat in latencies if lat.get("max") is not None]
        mins = [float(lat["min"]) for lat in latencies if lat.get("min") is not None]
        max_ms = max(maxes) if maxes else None
        timed = histogram.total
        merged["latency_ms"] = {
            "avg": round(total / timed, 3) if timed else None,
            "p50": _round(histogram.percentile(50, max_ms=max_ms)),
            "p95": _round(histogram.percentile(95, max_ms=max_ms)),
            "p99": _round(histogram.percentile(99, max_ms=max_ms)),
            "max": _round(max_ms),
            "min": _round(min(mins) if mins else None),
            "sum": round(total, 3),
        }
        merged["histogram"] = histogram.to_json()
    if any("health" in p for p in points):
        healths = [TargetHealth(str(p["health"])) for p in points if p.get("health") in _HEALTHS]
        gone = all(p.get("health") == "gone" for p in points)
        merged["health"] = "gone" if gone else merge_health(healths).value
    return merged


_HEALTHS = {h.value for h in TargetHealth}


def merge_health_points(points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One route's health datapoint from several workers: the worst worker's view of it."""
    return {
        **points[0],
        "healthy": min(int(p.get("healthy", 0)) for p in points),
        "unhealthy": max(int(p.get("unhealthy", 0)) for p in points),
        "serving": min(int(p.get("serving", 0)) for p in points),
        "zero_healthy_seconds": max(float(p.get("zero_healthy_seconds", 0.0)) for p in points),
    }


def _grouped(
    items: Sequence[Mapping[str, Any]], labels: Sequence[str]
) -> list[list[Mapping[str, Any]]]:
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for item in items:
        groups.setdefault(tuple(str(item.get(name, "")) for name in labels), []).append(item)
    return list(groups.values())


def merge_metrics(payloads: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The workers' `metrics` answers as one answer of the same shape (see `metrics.series`)."""
    datapoints = [p for payload in payloads for p in payload.get("datapoints", ())]
    health = [p for payload in payloads for p in payload.get("health", ())]
    totals = [p for payload in payloads for p in payload.get("totals", ())]
    point_labels = ("at", "service", "target", "revision")
    merged_points = [merge_points(g) for g in _grouped(datapoints, point_labels)]
    merged_health = [merge_health_points(g) for g in _grouped(health, ("at", "service"))]
    return {
        **payloads[0],
        "now": max(float(p.get("now", 0.0)) for p in payloads),
        "current": max(int(p.get("current", 0)) for p in payloads),
        # the running period stays last, as in one worker's answer
        "datapoints": sorted(merged_points, key=lambda p: int(p.get("at", 0))),
        "health": sorted(merged_health, key=lambda p: int(p.get("at", 0))),
        "totals": [merge_points(g) for g in _grouped(totals, ("service", "target", "revision"))],
    }


# -- the client --------------------------------------------------------------------------------


class WorkerPoolRouter:
    """The `Router` seam over N router workers: mutations go to all of them, reads are merged."""

    name = "builtin"

    def __init__(self, state_dir: Path, workers: int, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        if not 1 <= workers <= MAX_WORKERS:
            raise RouterError(f"a router pool has 1 to {MAX_WORKERS} workers, not {workers}")
        self.state_dir = Path(state_dir)
        self.workers = [
            BuiltinRouter(worker_state_dir(state_dir, k), timeout=timeout) for k in range(workers)
        ]

    async def _on_all(self, what: str, call: Callable[[BuiltinRouter], Awaitable[T]]) -> list[T]:
        """Run `call` on every worker at once; fail, naming the workers, if any of them failed."""
        results = await asyncio.gather(*(call(w) for w in self.workers), return_exceptions=True)
        failures = [(k, r) for k, r in enumerate(results) if isinstance(r, BaseException)]
        for _, exc in failures:
            if not isinstance(exc, Exception):
                raise exc  # KeyboardInterrupt and friends are not a worker's answer
        if failures:
            detail = "; ".join(f"worker {k}: {exc}" for k, exc in failures)
            unavailable = all(isinstance(exc, RouterUnavailable) for _, exc in failures)
            kind = RouterUnavailable if unavailable else RouterError
            raise kind(
                f"{what} failed on {len(failures)} of {len(self.workers)} router workers "
                f"(the others applied it; retrying is safe): {detail}"
            ) from failures[0][1]
        return [r for r in results if not isinstance(r, BaseException)]

    async def ping(self) -> dict[str, Any]:
        """Worker 0's `ping`, with every worker's under `workers` (fails if any is down)."""
        pings = await self._on_all("ping", lambda w: w.ping())
        return {**pings[0], "workers": pings}

    async def events(self, since: int = 0, limit: int = 500) -> list[dict[str, Any]]:
        """Worker 0's events: mutations reach every worker alike, so one log tells them; merged
        logs would repeat each route change N times and interleave N sequence numbers."""
        return await self.workers[0].events(since, limit)

    async def metrics(self, since: float | None = None) -> dict[str, Any]:
        """Every worker's datapoints and totals merged into one answer of the usual shape."""
        return merge_metrics(await self._on_all("metrics", lambda w: w.metrics(since)))

    async def apply_route(self, route: RouteSpec) -> None:
        """Create or update a route on every worker."""
        await self._on_all("apply_route", lambda w: w.apply_route(route))

    async def remove_route(self, service: str) -> None:
        """Delete a route on every worker (drain its targets first)."""
        await self._on_all("remove_route", lambda w: w.remove_route(service))

    async def add_target(self, target: TargetSpec, *, healthy: bool = False) -> None:
        """Add or update a target on every worker."""
        await self._on_all("add_target", lambda w: w.add_target(target, healthy=healthy))

    async def set_pool_weights(self, service: str, weights: Mapping[str, int]) -> None:
        """Change pool weights on every worker (each worker's step is one table change; they
        step together, within one control round trip of each other)."""
        await self._on_all("set_pool_weights", lambda w: w.set_pool_weights(service, weights))

    async def drain_target(
        self, service: str, target_id: str, *, timeout: float | None = None
    ) -> DrainResult:
        """Drain the target on every worker at once; answers when the slowest one is done."""
        results = await self._on_all(
            "drain_target", lambda w: w.drain_target(service, target_id, timeout=timeout)
        )
        return merge_drain_results(results)

    async def status(self, service: str | None = None) -> list[RouteStatus]:
        """Routes and targets as the workers together see them (see `merge_route_statuses`)."""
        return merge_route_statuses(await self._on_all("status", lambda w: w.status(service)))


# -- the worker processes ------------------------------------------------------------------------


async def _ping_or_none(state_dir: Path) -> dict[str, Any] | None:
    try:
        return await BuiltinRouter(state_dir).ping()
    except RouterUnavailable:
        return None


def seed_worker_state(state_dir: Path, index: int) -> None:
    """Copy worker 0's saved table to worker `index` before it starts (the table of record)."""
    source = RouterPaths.under(state_dir).state
    target = RouterPaths.under(worker_state_dir(state_dir, index))
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        return
    target.create()
    write_atomic(target.state, data)


def _has_free_port(addresses: Sequence[str]) -> bool:
    return any(parse_listen(address)[1] == 0 for address in addresses)


async def ensure_pool(
    state_dir: Path, listen: list[str], workers: int, *, grace: float | None = None
) -> list[dict[str, Any]]:
    """Every worker's `ping`, starting (concurrently) the workers that do not answer.

    Running workers keep their addresses and bind those of `listen` they lack (no restart); new
    workers join on the running ones' addresses. A port 0 is resolved by
    starting worker 0 first. Workers started here are stopped again if any of them fails.
    Workers beyond `workers` (the pool was larger) are stopped: their tables would go stale."""
    extra = [d for d in worker_dirs(state_dir)[1:] if int(d.name.partition("-")[2]) >= workers]
    await asyncio.gather(*(stop_router(d, timeout=30.0) for d in extra))
    pings = list(await asyncio.gather(*(_ping_or_none(d) for d in _dirs(state_dir, workers))))
    running = [p for p in pings if p is not None]
    addresses = list(running[0]["listen"]) if running else list(listen)
    lacking = missing_addresses(addresses, listen)
    if running and lacking:  # an environment was added: every running worker binds it too
        on = [k for k, p in enumerate(pings) if p is not None]
        answers = await asyncio.gather(
            *(BuiltinRouter(worker_state_dir(state_dir, k)).listen(lacking) for k in on)
        )
        for k, answer in zip(on, answers, strict=True):
            pings[k] = {**(pings[k] or {}), "listen": answer["listen"]}
        addresses = list(answers[0]["listen"])
    missing = [k for k, p in enumerate(pings) if p is None]
    started: list[int] = []
    try:
        if missing and not running and _has_free_port(addresses):
            first = missing.pop(0)
            info = await _start_worker(state_dir, first, addresses, grace)
            pings[first] = info
            started.append(first)
            addresses = list(info["listen"])
        results = await asyncio.gather(
            *(_start_worker(state_dir, k, addresses, grace) for k in missing),
            return_exceptions=True,
        )
        failed = []
        for k, result in zip(missing, results, strict=True):
            if isinstance(result, BaseException):
                failed.append(f"worker {k}: {result}")
            else:
                pings[k] = result
                started.append(k)
        if failed:
            hint = ""
            if running:
                hint = (
                    " (a router started with `workers: 1` binds without SO_REUSEPORT: "
                    "`zerodown router stop`, then start the pool)"
                )
            raise RouterError(f"router workers failed to start{hint}: {'; '.join(failed)}")
    except BaseException:
        await asyncio.gather(
            *(stop_router(worker_state_dir(state_dir, k), timeout=10.0) for k in started),
            return_exceptions=True,
        )
        raise
    return [p for p in pings if p is not None]


def _dirs(state_dir: Path, workers: int) -> list[Path]:
    return [worker_state_dir(state_dir, k) for k in range(workers)]


async def _start_worker(
    state_dir: Path, index: int, listen: list[str], grace: float | None
) -> dict[str, Any]:
    if index > 0:
        seed_worker_state(state_dir, index)
    return await start_router_process(
        worker_state_dir(state_dir, index), listen, grace=grace, reuse_port=True
    )


async def restart_pool(state_dir: Path) -> list[dict[str, Any]]:
    """Hitless restart of every running worker, one after another (each hands its own listening
    socket to its successor, as a lone router does); returns the new workers' `ping`s."""
    infos = [await restart_router(state_dir)]  # worker 0 must run: it raises RouterUnavailable
    for directory in worker_dirs(state_dir)[1:]:
        if await _ping_or_none(directory) is not None:
            infos.append(await restart_router(directory))
    return infos


async def stop_pool(state_dir: Path, *, timeout: float = 45.0) -> list[int]:
    """Stop worker 0 and every other worker found under `state_dir`, concurrently; the pids
    stopped. With no worker directories this is exactly `stop_router(state_dir)`."""
    directories = worker_dirs(state_dir)
    if len(directories) == 1:
        pid = await stop_router(state_dir, timeout=timeout)
        return [] if pid is None else [pid]
    pids = await asyncio.gather(*(stop_router(d, timeout=timeout) for d in directories))
    return [pid for pid in pids if pid is not None]
