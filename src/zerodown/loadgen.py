"""A bounded closed-loop HTTP load generator: the demo, the tests and the benchmarks count with it.

Each of `connections` workers sends a request, waits for the whole answer, and sends the next, until
the stop event is set, `max_seconds` pass or `max_requests` were sent. A request fails when the
transport fails or the status is 5xx; every failure is kept with its reason.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx


@dataclass
class LoadReport:
    """What a load run saw."""

    sent: int = 0
    ok: int = 0
    failed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)  # `version` field of JSON answers
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def percentile(self, pct: float) -> float:
        """Latency percentile in seconds (0 when nothing was measured)."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
        return ordered[index]

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class LoadSpec:
    """How much load to send, and where."""

    url: str
    connections: int = 50
    slow_fraction: float = 0.0  # share of requests sent to `slow_path`
    slow_path: str = "/slow?seconds=2"
    max_seconds: float = 60.0
    max_requests: int = 1_000_000
    timeout: float = 30.0
    headers: tuple[tuple[str, str], ...] = ()


async def run_load(spec: LoadSpec, stop: asyncio.Event | None = None) -> LoadReport:
    """Run closed-loop load until `stop` is set or a bound is reached; return the report."""
    stop = stop or asyncio.Event()
    report = LoadReport()
    started = time.monotonic()
    deadline = started + spec.max_seconds
    base = spec.url.rstrip("/")
    size = spec.connections
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    async with httpx.AsyncClient(
        timeout=spec.timeout, limits=limits, headers=dict(spec.headers)
    ) as client:

        async def worker(seed: int) -> None:
            rng = random.Random(seed)
            while not stop.is_set() and time.monotonic() < deadline:
                if report.sent >= spec.max_requests:
                    return
                slow = rng.random() < spec.slow_fraction
                url = base + (spec.slow_path if slow else "/")
                report.sent += 1
                began = time.monotonic()
                try:
                    response = await client.get(url)
                except httpx.HTTPError as exc:
                    report.failed += 1
                    report.failures[f"{type(exc).__name__}: {exc}"[:120]] += 1
                    continue
                report.latencies.append(time.monotonic() - began)
                if response.status_code >= 500:
                    report.failed += 1
                    report.failures[f"HTTP {response.status_code}"] += 1
                    continue
                report.ok += 1
                if not slow and response.headers.get("content-type") == "application/json":
                    try:
                        version = str(response.json().get("version", "?"))
                    except ValueError:
                        version = "?"
                    report.versions[version] += 1

        await asyncio.gather(*(worker(i) for i in range(spec.connections)))
    report.seconds = time.monotonic() - started
    return report
