"""The processes a benchmark runs: servers, load tools, the CPU they use, and their profiles.

Everything here is bounded: servers get a start deadline and are stopped (SIGTERM, then SIGKILL)
when their block ends, load tools get their duration plus `TOOL_SLACK`, retries are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import marshal
import math
import resource
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from benchmarks.machine import cpu_seconds, machine_busy_seconds
from benchmarks.report import BenchError, HeyResult

Result = TypeVar("Result")

START_TIMEOUT = 20.0
TOOL_SLACK = 30.0  # a load tool gets its duration plus this before it is killed
MAX_RUNS = 3  # of one measurement, while outside work disturbs it
NOISY_CPU = 0.25  # cores of outside work during a measurement that make it noisy
ENTRY_CHAIN_SHARE = 0.8  # a profiled frame with this share of the longest cumulative time waits


def free_port() -> int:
    """A port that was free a moment ago (for servers that cannot be told to bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_for_port(port: int, process: asyncio.subprocess.Process, timeout: float) -> bool:
    """Poll until `port` accepts a connection; False if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.returncode is None:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)  # another process's socket: no event to await
            continue
        writer.close()
        return True
    return False


async def stop_process(process: asyncio.subprocess.Process, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`; always reaps."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    await process.wait()


@dataclass(frozen=True)
class Server:
    """A server process we started, and the port it listens on."""

    name: str
    port: int
    pid: int


@contextlib.asynccontextmanager
async def serving(
    name: str, workdir: Path, command_for: Callable[[int], list[str]], attempts: int = 3
) -> AsyncIterator[Server]:
    """Start `command_for(port)` on a fresh port (retried if the port was taken); stop it after."""
    log_path = workdir / f"{name}.log"
    for _ in range(attempts):
        port = free_port()
        with log_path.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                *command_for(port),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        try:
            if await wait_for_port(port, process, START_TIMEOUT):
                yield Server(name, port, process.pid)
                return
        finally:
            await stop_process(process)
    tail = log_path.read_text(errors="replace")[-1500:].strip()
    raise BenchError(f"{name} did not start listening; {log_path} says: {tail or '(nothing)'}")


async def run_tool(command: list[str], timeout: float) -> str:
    """Run a load tool to completion and return what it printed; BenchError if it fails."""
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError as exc:
        raise BenchError(f"{command[0]} is not installed: run `make system`") from exc
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError as exc:
        process.kill()
        await process.wait()
        raise BenchError(f"{command[0]} did not finish within {timeout:.0f} s") from exc
    if process.returncode != 0:
        raise BenchError(f"{' '.join(command)} failed: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


async def least_disturbed(
    measure: Callable[[], Awaitable[Result]],
    pids: tuple[Sequence[int], Sequence[int]],  # the proxy's processes, the upstream's
    report: Callable[[str], None],
) -> tuple[Result, CpuShare, int]:
    """Measure; again (up to MAX_RUNS) while outside work takes a core. The calmest run wins.

    Several helpers and test suites may share this machine; a run they disturb says more about
    them than about the proxy. Returns the result, its CPU shares and how many runs were made.
    """
    best: tuple[Result, CpuShare] | None = None
    runs = 0
    while runs < MAX_RUNS:
        runs += 1
        before = CpuSample.take(*pids)
        result = await measure()
        share = CpuSample.take(*pids) - before
        if best is None or share.other < best[1].other:
            best = result, share
        if share.other < NOISY_CPU:
            break
        again = "measuring again" if runs < MAX_RUNS else f"keeping the calmest of {runs} runs"
        report(f"work outside the benchmark used {share.other:.2f} cores; {again}")
    assert best is not None  # MAX_RUNS >= 1
    return best[0], best[1], runs


@dataclass(frozen=True)
class CpuShare:
    """Cores used during a measurement: proxy, nginx, wrk, and the rest of the machine."""

    proxy: float
    upstream: float
    children: float  # our reaped children: the load tool
    other: float  # work that is not this benchmark's


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds used so far by the proxy, nginx, our finished children (wrk), and the machine."""

    at: float
    proxy: float
    upstream: float
    children: float
    machine: float

    @classmethod
    def take(cls, proxy_pids: Sequence[int], upstream_pids: Sequence[int]) -> CpuSample:
        """Read the counters now."""
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once it has been reaped
        return cls(
            time.monotonic(), cpu_seconds(proxy_pids), cpu_seconds(upstream_pids),
            usage.ru_utime + usage.ru_stime, machine_busy_seconds(),
        )  # fmt: skip

    def __sub__(self, earlier: CpuSample) -> CpuShare:
        """Cores used in between."""
        wall = self.at - earlier.at
        proxy, upstream = self.proxy - earlier.proxy, self.upstream - earlier.upstream
        children = self.children - earlier.children
        other = self.machine - earlier.machine - proxy - upstream - children
        return CpuShare(proxy / wall, upstream / wall, children / wall, max(0.0, other) / wall)


# -- a fixed-rate load generator for machines without hey --------------------------------------


async def fixed_rate_load(
    host: str, port: int, seconds: float, workers: int, rate_per_worker: float
) -> HeyResult:
    """`hey -z -c -q` in Python: each worker sends GET / on one keep-alive connection per schedule.

    Latency counts from the *scheduled* send time, so a stall shows up in p99 instead of quietly
    lowering the rate (no coordinated omission). Only `Content-Length` answers are understood.
    """
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    started = time.monotonic()

    async def worker(offset: float) -> None:
        nonlocal errors
        interval = 1.0 / rate_per_worker
        # Slots by index, not by adding up `interval`: accumulated float error would sometimes
        # squeeze one more request in before `end`.
        slots = math.ceil((seconds - offset) * rate_per_worker - 1e-9)
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            for slot in range(slots):
                due = started + offset + slot * interval
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                try:
                    connection = connection or await asyncio.open_connection(host, port)
                    status = await _get(*connection, host)
                except (OSError, ValueError, asyncio.IncompleteReadError):
                    errors += 1
                    if connection:
                        connection[1].close()
                    connection = None  # a fresh connection for the next request
                else:
                    latencies.append(time.monotonic() - due)
                    statuses[status] = statuses.get(status, 0) + 1
        finally:
            if connection:
                connection[1].close()

    spread = 1.0 / (rate_per_worker * workers)  # start workers apart so requests interleave
    await asyncio.wait_for(
        asyncio.gather(*(worker(i * spread) for i in range(workers))), seconds + TOOL_SLACK
    )
    latencies.sort()
    elapsed = max(seconds, time.monotonic() - started)  # the schedule spans `seconds`

    def percentile(pct: int) -> float | None:
        return (
            latencies[min(len(latencies) - 1, len(latencies) * pct // 100)] if latencies else None
        )

    return HeyResult(
        len(latencies) / elapsed, percentile(50), percentile(99), statuses, errors, tool="asyncio"
    )


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> int:
    writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status = int(head.split(" ", 2)[1])
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            await reader.readexactly(int(value))
            return status
    raise ValueError("an answer without Content-Length")


# -- reading a cProfile file ------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileLine:
    """One function of a cProfile run."""

    function: str  # file:line(name), shortened to the package path
    calls: int
    cumtime: float
    tottime: float


def read_profile(
    path: Path, count: int = 5, *, by: Literal["cumtime", "tottime"] = "cumtime"
) -> list[ProfileLine]:
    """The top functions by `by` ("cumtime" or "tottime"), leaving out process start-up.

    Start-up is module imports and the entry chain: frames called once whose cumulative time
    is (nearly) the whole run, such as `main()` and `asyncio.Runner.run`.
    """
    # cProfile writes marshal: {(file, line, name): (calls, ncalls, own, cumulative, callers)}.
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = marshal.loads(
        path.read_bytes()
    )
    longest = max((row[3] for row in raw.values()), default=0.0)
    lines = [
        ProfileLine(_short(file_name, line, name), calls, cumtime, tottime)
        for (file_name, line, name), (_, calls, tottime, cumtime, _) in raw.items()
        if not (calls == 1 and cumtime >= ENTRY_CHAIN_SHARE * longest)
        and "importlib" not in file_name
    ]
    lines.sort(key=lambda line: line.cumtime if by == "cumtime" else line.tottime, reverse=True)
    return lines[:count]


def _short(file_name: str, line: int, function: str) -> str:
    if file_name == "~":  # a C function: cProfile names it "<built-in method ...>"
        return function
    marker = "/zerodown/"
    if marker in file_name:
        file_name = "zerodown/" + file_name.rpartition(marker)[2]
    elif file_name.startswith("/"):
        file_name = Path(file_name).name
    return f"{file_name}:{line}({function})"
