"""HAProxy's `show stat` and `show servers conn`, and the 10 s metrics sampled from them.

HAProxy counts per server (responses by class, sessions) and keeps averages of the last 1024
requests (`ttime`, total time) plus maxima since the worker started. `MetricsSampler` turns the
growth of the counters between two readings into the datapoints of `zerodown.metrics.series`,
attributed to the 10 s period of the reading. What it cannot know, it approximates:
- latency: each datapoint's requests are counted at HAProxy's average `ttime` (no histogram), so
  p50/p95/p99 equal the average; `max` is `ttime_max` when it grew during the period;
- a reload restarts the counters: a counter lower than the last reading (or a new worker pid)
  counts from zero, and what the old worker answered after the last reading is lost;
- requests are attributed to the period in which they were read (read at least every 10 s by
  the alarms and the analysis while a deployment runs).
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zerodown.health.spec import TargetHealth
from zerodown.metrics.series import PERIOD, Histogram
from zerodown.routers.haproxy.state import write_atomic

RETENTION = 3 * 3600  # seconds of datapoints kept, as the built-in router
FILE_RETENTION = 3600  # seconds of datapoints kept in metrics.json
_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


@dataclass(frozen=True)
class ServerStat:
    """One server row of `show stat`."""

    backend: str
    server: str
    status: str  # UP, UP 1/3, DOWN, DOWN 1/2, NOLB, MAINT, DRAIN, no check, ...
    scur: int  # sessions now
    responses: dict[str, int]  # 1xx..5xx, other
    errors: int  # eresp + econ: upstream errors
    ttime: int  # average total time in ms over the last 1024 requests
    ttime_max: int
    weight: int

    @property
    def requests(self) -> int:
        """Responses of every class (HAProxy's servers have no req_tot)."""
        return sum(self.responses.values())

    @property
    def health(self) -> TargetHealth:
        """The health the `Router` seam reports."""
        word = self.status.split()[0].upper() if self.status else ""
        if word in ("UP", "NOLB", "DRAIN", "NO"):  # "no check": always up
            return TargetHealth.HEALTHY
        if word == "DOWN":
            return TargetHealth.UNHEALTHY
        return TargetHealth.UNKNOWN  # MAINT: not serving, not checked

    @property
    def draining(self) -> bool:
        """Drain or maintenance: no new requests."""
        word = self.status.split()[0].upper() if self.status else ""
        return word in ("DRAIN", "MAINT")


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def parse_show_stat(text: str) -> list[ServerStat]:
    """The server rows of `show stat` (frontends and backends are left out)."""
    body = text.lstrip("# ")
    rows = []
    for row in csv.DictReader(io.StringIO(body)):
        server = row.get("svname", "")
        if server in ("FRONTEND", "BACKEND", "") or row.get("type") not in ("2", None):
            continue
        rows.append(
            ServerStat(
                backend=row.get("pxname", ""),
                server=server,
                status=row.get("status", ""),
                scur=_int(row.get("scur")),
                responses={
                    **{c: _int(row.get(f"hrsp_{c}")) for c in _CLASSES},
                    "other": _int(row.get("hrsp_other")),
                },
                errors=_int(row.get("eresp")) + _int(row.get("econ")),
                ttime=_int(row.get("ttime")),
                ttime_max=_int(row.get("ttime_max")),
                weight=_int(row.get("weight")),
            )
        )
    return rows


def parse_servers_conn(text: str) -> dict[str, int]:
    """`show servers conn <backend>`: used connections per server name."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("#"):
        return {}
    header = lines[0].lstrip("# ").split()
    try:
        used = header.index("used_cur")
    except ValueError:
        return {}
    found = {}
    for line in lines[1:]:
        words = line.split()
        if len(words) > used:
            found[words[0].split("/", 1)[-1]] = _int(words[used])
    return found


@dataclass
class _Cell:
    """One target's counts over one period."""

    revision: str
    requests: int = 0
    by_class: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_CLASSES, 0))
    upstream_errors: int = 0
    latency_sum: float = 0.0
    latency_max: float = 0.0
    inflight: int = 0
    histogram: Histogram = field(default_factory=Histogram)

    def to_json(self, at: int, service: str, target: str) -> dict[str, Any]:
        timed = self.histogram.total
        avg = round(self.latency_sum / timed, 3) if timed else None
        top = round(self.latency_max, 3) if timed else None
        return {
            "at": at,
            "service": service,
            "revision": self.revision,
            "target": target,
            "requests": self.requests,
            **{c: self.by_class[c] for c in ("2xx", "3xx", "4xx", "5xx")},
            "upstream_errors": self.upstream_errors,
            # One average per reading: the percentiles are that average (see the module doc).
            "latency_ms": {
                "avg": avg,
                "p50": avg,
                "p95": avg,
                "p99": avg,
                "max": top,
                "min": avg,
                "sum": round(self.latency_sum, 3),
            },
            "inflight": self.inflight,
            "histogram": self.histogram.to_json(),
        }


@dataclass(frozen=True)
class Observed:
    """One server row joined with the target it stands for."""

    service: str
    target: str
    revision: str
    stat: ServerStat
    live: bool  # counts towards the route's health (not a preview or drained copy)
    serving: bool  # may take a request now (healthy, not draining, weight > 0)


class MetricsSampler:
    """10 s datapoints per target and health per route, from successive `show stat` readings."""

    def __init__(self, file: Path | None = None, *, now: Callable[[], float] = time.time) -> None:
        self.file = file
        self._now = now
        self._closed: deque[dict[str, Any]] = deque()
        self._health_closed: deque[dict[str, Any]] = deque()
        self._cells: dict[tuple[str, str], _Cell] = {}
        self._health: dict[str, dict[str, Any]] = {}
        self._totals: dict[tuple[str, str], _Cell] = {}
        self._last: dict[tuple[str, str], tuple[dict[str, int], int, int]] = {}
        self._worker = 0
        self._current_at = int(now() // PERIOD) * PERIOD
        self._last_read = now()
        self._served: set[str] = set()
        self._load()

    # -- readings ------------------------------------------------------------------------------

    def observe(self, worker: int, rows: Iterable[Observed]) -> None:
        """Add the counters' growth since the last reading to the current period."""
        now = self._now()
        self._roll(now)
        fresh = worker != self._worker
        self._worker = worker
        routes: dict[str, list[int]] = {}
        for item in rows:
            key = (item.service, item.target)
            stat = item.stat
            counts = {**stat.responses, "errors": stat.errors}
            # Growth from the last reading of this worker; from zero for a new worker, a new
            # server or counters that went down (they restarted).
            before = None if fresh else self._last.get(key)
            if before is not None and any(counts[k] < before[0].get(k, 0) for k in counts):
                before = None
            self._last[key] = (counts, stat.ttime_max, stat.weight)
            grown = {k: counts[k] - (before[0].get(k, 0) if before else 0) for k in counts}
            cell = self._cell(key, item.revision)
            requests = sum(grown[c] for c in (*_CLASSES, "other"))
            if requests > 0:
                cell.requests += requests
                for c in _CLASSES:
                    cell.by_class[c] += grown[c]
                cell.latency_sum += stat.ttime * requests
                grew_max = before is None or stat.ttime_max > before[1]
                cell.latency_max = max(
                    cell.latency_max, float(stat.ttime_max if grew_max else stat.ttime)
                )
                cell.histogram.add(float(stat.ttime), requests)
            cell.upstream_errors += max(0, grown["errors"])
            cell.inflight = max(cell.inflight, stat.scur)
            if item.live:
                counts_of = routes.setdefault(item.service, [0, 0, 0])
                counts_of[0] += stat.health is TargetHealth.HEALTHY and not stat.draining
                counts_of[1] += stat.health is TargetHealth.UNHEALTHY
                counts_of[2] += item.serving
        self._count_health(routes, now)
        self._last_read = now
        self._save()

    def _cell(self, key: tuple[str, str], revision: str) -> _Cell:
        cell = self._cells.get(key)
        if cell is None or cell.revision != revision:
            cell = self._cells[key] = _Cell(revision)
        return cell

    def _count_health(self, routes: dict[str, list[int]], now: float) -> None:
        elapsed = max(0.0, now - self._last_read)
        for service, (healthy, unhealthy, serving) in routes.items():
            state = self._health.get(service)
            if state is None:
                state = self._health[service] = {
                    "healthy": healthy,
                    "unhealthy": unhealthy,
                    "zero": 0.0,
                }
            state["healthy"] = min(state["healthy"], healthy)
            state["unhealthy"] = max(state["unhealthy"], unhealthy)
            state["serving"] = serving
            if serving:
                self._served.add(service)
            elif service in self._served:
                state["zero"] += min(elapsed, float(PERIOD))

    # -- reading back --------------------------------------------------------------------------

    def snapshot(self, since: float | None = None) -> dict[str, Any]:
        """The built-in router's `metrics` shape: datapoints, health and totals."""
        now = self._now()
        self._roll(now)
        floor = -1.0 if since is None else float(since)
        points = [p for p in self._closed if p["at"] >= floor]
        health = [p for p in self._health_closed if p["at"] >= floor]
        if self._current_at >= floor:
            points += [c.to_json(self._current_at, s, t) for (s, t), c in self._cells.items()]
            health += [self._health_point(s, h, self._current_at) for s, h in self._health.items()]
        totals = []
        for (service, target), cell in self._totals_now().items():
            point = cell.to_json(0, service, target)
            del point["at"]
            totals.append(point)
        return {
            "period": PERIOD,
            "now": round(now, 3),
            "current": self._current_at,
            "datapoints": points,
            "health": health,
            "totals": totals,
        }

    def _totals_now(self) -> dict[tuple[str, str], _Cell]:
        combined: dict[tuple[str, str], _Cell] = {}
        for key, cell in [*self._totals.items(), *self._cells.items()]:
            into = combined.get(key)
            if into is None or into.revision != cell.revision:
                into = combined[key] = _Cell(cell.revision)
            _absorb(into, cell)
        return combined

    def _health_point(self, service: str, state: dict[str, Any], at: int) -> dict[str, Any]:
        return {
            "at": at,
            "service": service,
            "healthy": int(state["healthy"]),
            "unhealthy": int(state["unhealthy"]),
            "serving": int(state.get("serving", 0)),
            "zero_healthy_seconds": round(min(float(state["zero"]), float(PERIOD)), 3),
        }

    # -- periods -------------------------------------------------------------------------------

    def _roll(self, now: float) -> None:
        new_at = int(now // PERIOD) * PERIOD
        if new_at <= self._current_at:
            return
        for (service, target), cell in self._cells.items():
            self._closed.append(cell.to_json(self._current_at, service, target))
            total = self._totals.get((service, target))
            if total is None or total.revision != cell.revision:
                total = self._totals[(service, target)] = _Cell(cell.revision)
            _absorb(total, cell)
        for service, state in self._health.items():
            self._health_closed.append(self._health_point(service, state, self._current_at))
            state.update(zero=0.0, healthy=state.get("serving", 0), unhealthy=state["unhealthy"])
        self._cells = {}
        self._current_at = new_at
        oldest = new_at - RETENTION
        while self._closed and self._closed[0]["at"] < oldest:
            self._closed.popleft()
        while self._health_closed and self._health_closed[0]["at"] < oldest:
            self._health_closed.popleft()

    # -- the file ------------------------------------------------------------------------------

    def _save(self) -> None:
        if self.file is None:
            return
        oldest = self._current_at - FILE_RETENTION
        data = {
            "worker": self._worker,
            "last": {f"{s}\t{t}": list(v) for (s, t), v in self._last.items()},
            "datapoints": [p for p in self._closed if p["at"] >= oldest],
            "health": [p for p in self._health_closed if p["at"] >= oldest],
            "current": {
                "at": self._current_at,
                "cells": [c.to_json(self._current_at, s, t) for (s, t), c in self._cells.items()],
            },
        }
        write_atomic(self.file, json.dumps(data))

    def _load(self) -> None:
        if self.file is None:
            return
        try:
            data = json.loads(self.file.read_text())
        except (FileNotFoundError, ValueError):
            return
        self._worker = int(data.get("worker", 0))
        for key, value in data.get("last", {}).items():
            service, _, target = key.partition("\t")
            self._last[(service, target)] = (dict(value[0]), int(value[1]), int(value[2]))
        self._closed.extend(data.get("datapoints", []))
        self._health_closed.extend(data.get("health", []))
        current = data.get("current", {})
        cells = current.get("cells", [])
        if int(current.get("at", 0)) == self._current_at:
            for point in cells:
                self._cells[(point["service"], point["target"])] = _cell_from_json(point)
        else:
            self._closed.extend(cells)  # that period has closed meanwhile


def _absorb(into: _Cell, cell: _Cell) -> None:
    into.requests += cell.requests
    for c in _CLASSES:
        into.by_class[c] += cell.by_class[c]
    into.upstream_errors += cell.upstream_errors
    into.latency_sum += cell.latency_sum
    into.latency_max = max(into.latency_max, cell.latency_max)
    into.inflight = max(into.inflight, cell.inflight)
    into.histogram.merge(cell.histogram)


def _cell_from_json(point: dict[str, Any]) -> _Cell:
    latency = point.get("latency_ms") or {}
    cell = _Cell(str(point.get("revision", "")))
    cell.requests = int(point.get("requests", 0))
    for c in ("2xx", "3xx", "4xx", "5xx"):
        cell.by_class[c] = int(point.get(c, 0))
    cell.upstream_errors = int(point.get("upstream_errors", 0))
    cell.latency_sum = float(latency.get("sum") or 0.0)
    cell.latency_max = float(latency.get("max") or 0.0)
    cell.inflight = int(point.get("inflight", 0))
    cell.histogram = Histogram.from_json(point.get("histogram"))
    return cell
