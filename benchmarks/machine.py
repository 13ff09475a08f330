"""Facts about the machine a benchmark ran on, so a reader can judge the figures."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

QUIET_LOAD = 0.5  # 1-minute load average under which a benchmark starts
# `<tool> <flag>` printing a version line; hey has no version flag, so it is not listed.
TOOL_VERSION_COMMANDS: dict[str, list[str]] = {
    "nginx": ["nginx", "-v"],
    "haproxy": ["haproxy", "-v"],
    "wrk": ["wrk", "-v"],
}


@dataclass(frozen=True)
class MachineFacts:
    """CPU, cores, memory, kernel, Python and load-tool versions of one machine."""

    cpu_model: str
    cores: int
    ram_gib: float
    kernel: str
    os_release: str
    python: str
    tools: dict[str, str]

    def rows(self) -> list[tuple[str, str]]:
        """The facts as (name, value) rows for a two-column table."""
        rows = [
            ("CPU", self.cpu_model),
            ("Cores", str(self.cores)),
            ("RAM", f"{self.ram_gib:.1f} GiB"),
            ("Kernel", self.kernel),
            ("OS", self.os_release),
            ("Python", self.python),
        ]
        rows += [(name, version) for name, version in sorted(self.tools.items())]
        return rows

    def one_line(self) -> str:
        """A short summary for a section's "measured on" line."""
        return f"{self.cpu_model}, {self.cores} cores, {self.ram_gib:.0f} GiB RAM"


def read_cpu_model(cpuinfo: str) -> str:
    """The first `model name` (x86) or `Model`/`Hardware` (arm) value of /proc/cpuinfo text."""
    for key in ("model name", "Model", "Hardware"):
        match = re.search(rf"^{key}\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
        if match:
            return match.group(1).strip()
    return platform.processor() or "unknown"


def read_ram_gib(meminfo: str) -> float:
    """MemTotal of /proc/meminfo text, in GiB (0 when absent)."""
    match = re.search(r"^MemTotal:\s*(\d+)\s*kB", meminfo, re.MULTILINE)
    return int(match.group(1)) / (1024 * 1024) if match else 0.0


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _os_release() -> str:
    match = re.search(r'^PRETTY_NAME="?([^"\n]+)"?', _read_text("/etc/os-release"), re.MULTILINE)
    return match.group(1) if match else platform.platform()


async def tool_version(command: list[str], timeout: float = 10.0) -> str:
    """The first line a tool prints about its version, or "not installed"."""
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except FileNotFoundError:
        return "not installed"
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        return "unknown (no answer)"
    lines = output.decode(errors="replace").strip().splitlines()
    return lines[0].strip() if lines else "unknown"


async def collect_machine() -> MachineFacts:
    """Read the facts of this machine (Linux /proc; elsewhere what `platform` knows)."""
    versions = await asyncio.gather(*(tool_version(c) for c in TOOL_VERSION_COMMANDS.values()))
    tools = dict(zip(TOOL_VERSION_COMMANDS, versions, strict=True))
    return MachineFacts(
        cpu_model=read_cpu_model(_read_text("/proc/cpuinfo")),
        cores=os.cpu_count() or 1,
        ram_gib=read_ram_gib(_read_text("/proc/meminfo")),
        kernel=f"{platform.system()} {platform.release()} ({platform.machine()})",
        os_release=_os_release(),
        python=f"{platform.python_implementation()} {platform.python_version()}",
        tools=tools,
    )


# -- what the machine is doing now ----------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (nginx's master and its worker), from /proc."""
    found: list[int] = []
    pending = [pid]
    while pending and len(found) < 1000:  # bounded: a benchmark's tree is a handful of processes
        current = pending.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds the processes (all their threads) have used so far."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent not idle since boot (the first line of /proc/stat)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = sum(fields[3:5])  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # guest time is inside user


def load_average() -> float:
    """The 1-minute load average (0 where /proc/loadavg is missing)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return 0.0


async def wait_for_quiet_machine(
    report: Callable[[str], None], threshold: float = QUIET_LOAD, timeout: float = 120.0
) -> float:
    """Wait (bounded) for other work to settle, since it shares the cores; returns the load."""
    deadline = time.monotonic() + timeout
    if (load := load_average()) > threshold:
        report(f"load average {load:.2f} > {threshold}: waiting up to {timeout:.0f} s to settle")
    while load > threshold and time.monotonic() < deadline:
        await asyncio.sleep(5.0)  # the kernel's average moves slowly; nothing to await
        load = load_average()
    return load
