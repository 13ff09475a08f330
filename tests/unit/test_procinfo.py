"""procinfo: processes named by pid and start time; a reused pid is never signalled."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from zerodown.runtimes.local import procinfo
from zerodown.runtimes.local.procinfo import ProcessIdentity


def _until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A `sleep` in its own session (so it leads its own process group)."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def test_identify_names_a_live_process_with_its_start_time() -> None:
    me = procinfo.identify(os.getpid())
    assert me is not None
    assert procinfo.is_alive(me)
    assert time.time() - 24 * 3600 < procinfo.started_at(me) <= time.time() + 1


def test_a_start_time_mismatch_means_a_reused_pid_and_is_treated_as_dead(
    sleeper: subprocess.Popen[bytes],
) -> None:
    real = procinfo.identify(sleeper.pid)
    assert real is not None
    impostor = ProcessIdentity(real.pid, real.start_ticks + 1)
    assert not procinfo.is_alive(impostor)
    assert not procinfo.signal_process(impostor, signal.SIGKILL)
    assert not procinfo.signal_group(impostor, signal.SIGKILL)
    assert not procinfo.group_alive(impostor)
    assert sleeper.poll() is None  # nothing was signalled
    assert procinfo.signal_process(real, signal.SIGKILL)
    assert sleeper.wait(10) == -signal.SIGKILL


def test_a_zombie_is_dead_and_has_no_identity() -> None:
    proc = subprocess.Popen(["true"])
    stat_then = procinfo.read_stat(proc.pid)
    assert _until(lambda: (s := procinfo.read_stat(proc.pid)) is not None and s.state == "Z")
    assert procinfo.identify(proc.pid) is None
    if stat_then is not None:
        assert not procinfo.is_alive(ProcessIdentity(proc.pid, stat_then.start_ticks))
    proc.wait()


def test_a_missing_pid_has_no_stat() -> None:
    assert procinfo.read_stat(2**31 - 1) is None


def test_signal_group_reaches_children_that_outlive_their_leader() -> None:
    leader = subprocess.Popen(
        ["sh", "-c", "sleep 60 & echo $!; exit 0"], start_new_session=True, stdout=subprocess.PIPE
    )
    assert leader.stdout is not None
    child_pid = int(leader.stdout.readline())
    leader.stdout.close()
    start = procinfo.read_stat(leader.pid)
    assert start is not None
    identity = ProcessIdentity(leader.pid, start.start_ticks)
    leader.wait()  # the leader is gone; its child still holds the group
    assert procinfo.group_members(leader.pid) == [child_pid]
    assert procinfo.group_alive(identity)
    assert procinfo.signal_group(identity, signal.SIGKILL)
    assert _until(lambda: not procinfo.group_alive(identity))


def test_read_stat_survives_parentheses_and_spaces_in_the_command_name(tmp_path: Path) -> None:
    sleep = shutil.which("sleep")
    assert sleep is not None
    odd = tmp_path / "a) b ("
    shutil.copy(sleep, odd)
    proc = subprocess.Popen([str(odd), "60"], start_new_session=True)
    try:
        stat = procinfo.read_stat(proc.pid)
        assert stat is not None
        assert stat.pgrp == proc.pid
        assert procinfo.identify(proc.pid) == ProcessIdentity(proc.pid, stat.start_ticks)
    finally:
        proc.kill()
        proc.wait()
