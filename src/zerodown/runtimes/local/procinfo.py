"""Processes named by pid *and* start time, so a reused pid is never taken for ours (Linux /proc).

A pid alone is not an identity: after a reboot or a wrap-around the same number names another
process. The kernel's start time (field 22 of /proc/<pid>/stat, in clock ticks since boot) does not
change for the life of a process, so (pid, start ticks) names exactly one process, ever.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessIdentity:
    """One process, named by its pid and its kernel start time (clock ticks since boot)."""

    pid: int
    start_ticks: int


@dataclass(frozen=True)
class ProcessStat:
    """The few fields of /proc/<pid>/stat that zerodown needs."""

    pid: int
    state: str  # R, S, D, Z (zombie), T, ...
    pgrp: int
    start_ticks: int


def read_stat(pid: int) -> ProcessStat | None:
    """Read /proc/<pid>/stat; None when no such process exists (or it vanished while reading)."""
    try:
        raw = (_PROC / str(pid) / "stat").read_bytes().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces or ')': split
    # after the last ')' so fields are counted from field 3 (state) on.
    rest = raw[raw.rfind(")") + 2 :].split()
    return ProcessStat(pid=pid, state=rest[0], pgrp=int(rest[2]), start_ticks=int(rest[19]))


def identify(pid: int) -> ProcessIdentity | None:
    """The identity of the live process `pid`, or None if there is none."""
    stat = read_stat(pid)
    if stat is None or stat.state == "Z":
        return None
    return ProcessIdentity(pid=pid, start_ticks=stat.start_ticks)


def is_alive(identity: ProcessIdentity) -> bool:
    """True while the very process `identity` names runs (a zombie or a reused pid is dead)."""
    stat = read_stat(identity.pid)
    return stat is not None and stat.state != "Z" and stat.start_ticks == identity.start_ticks


def boot_time() -> float:
    """Unix time the machine booted (the `btime` line of /proc/stat)."""
    for line in (_PROC / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("/proc/stat has no btime line")


def started_at(identity: ProcessIdentity) -> float:
    """Unix time the process started, from its start ticks."""
    return boot_time() + identity.start_ticks / os.sysconf("SC_CLK_TCK")


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes whose process group is `pgid`."""
    members = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = read_stat(int(entry.name))
        if stat is not None and stat.pgrp == pgid and stat.state != "Z":
            members.append(stat.pid)
    return members


def signal_process(identity: ProcessIdentity, sig: signal.Signals) -> bool:
    """Send `sig` to the process only if it is still the one `identity` names; True if sent."""
    if not is_alive(identity):
        return False
    try:
        os.kill(identity.pid, sig)
    except ProcessLookupError:
        return False
    return True


def signal_group(leader: ProcessIdentity, sig: signal.Signals) -> bool:
    """Send `sig` to the process group led by `leader` (pgid == its pid); True if sent.

    If a process now holds the leader's pid with another start time, the pid was reused and the
    group is not ours: nothing is sent. Otherwise the group id cannot have been reused while any
    member lives (Linux keeps a pid number allocated while a group uses it), so the members that
    outlived their leader are still ours.
    """
    current = read_stat(leader.pid)
    if current is not None and current.start_ticks != leader.start_ticks:
        return False
    if (current is None or current.state == "Z") and not group_members(leader.pid):
        return False
    try:
        os.killpg(leader.pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def group_alive(leader: ProcessIdentity) -> bool:
    """True while the leader or any member of its process group runs."""
    if is_alive(leader):
        return True
    current = read_stat(leader.pid)
    if current is not None and current.start_ticks != leader.start_ticks:
        return False  # the pid was reused: whatever group carries that number is not ours
    return bool(group_members(leader.pid))
