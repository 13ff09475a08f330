"""Re-adoption: an app whose supervisor died gets a new supervisor, and only one at a time.

Every supervisor holds an exclusive `flock` on `supervisor.lock` for its whole life; the kernel
drops it the moment the process dies, however it dies. So "may I supervise this instance?" is one
non-blocking lock call, race-free across control planes: a second adopter finds the lock held and
exits. `LocalRuntime.stop()` takes the same lock before it stops an unsupervised app itself, so an
adopter can never take over an app that is being stopped.

An adopter restarts the app with the environment it was started with, read back from
`/proc/<app_pid>/environ` (the control plane may not even hold the secrets any more); it keeps it
in memory only and masks the secret values in the log exactly like the first supervisor did. An
app that made itself unreadable (non-dumpable) cannot be adopted: it keeps serving unsupervised.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from zerodown.errors import RuntimeBackendError
from zerodown.runtimes.base import InstanceState
from zerodown.runtimes.local import procinfo
from zerodown.runtimes.local.instance_files import (
    StatusRecord,
    read_supervisor,
    supervisor_log_tail,
)
from zerodown.runtimes.local.procinfo import ProcessIdentity

log = logging.getLogger(__name__)

SUPERVISOR_LOCK = "supervisor.lock"
# Variables the supervisor itself sets for the app (see `supervisor.app_environment`).
ZERODOWN_APP_VARIABLES = (
    "ZERODOWN_PORT",
    "ZERODOWN_SERVICE",
    "ZERODOWN_REVISION",
    "ZERODOWN_INSTANCE",
)
_POLL_INTERVAL = 0.02

# Adopters this process launched (`--adopt`), by instance dir, with the app each was launched
# for: kept to reap them, so that one `list()` after another neither launches a second adopter
# while one starts nor retries, again and again, an app an adopter already failed to take over.
_adopters: dict[Path, tuple[subprocess.Popen[bytes], ProcessIdentity]] = {}
_adopters_lock = threading.Lock()  # `LocalRuntime.list()` checks in worker threads


def try_supervisor_lock(instance_dir: Path) -> int | None:
    """Take the instance's supervisor lock without waiting: its fd (keep it open), or None."""
    fd = os.open(instance_dir / SUPERVISOR_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def supervisor_lock(instance_dir: Path) -> Iterator[bool]:
    """Hold the supervisor lock for a block if it is free; yields whether it was taken."""
    fd = try_supervisor_lock(instance_dir)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            os.close(fd)  # closing the only fd of the open file drops the flock


def needs_adoption(
    recorded_state: str, app: ProcessIdentity | None, supervisor: ProcessIdentity | None
) -> bool:
    """Whether an instance's app runs as recorded while no supervisor watches it."""
    return (
        recorded_state == InstanceState.RUNNING
        and app is not None
        and procinfo.is_alive(app)
        and (supervisor is None or not procinfo.is_alive(supervisor))
    )


def read_app_environment(app: ProcessIdentity, names: set[str]) -> dict[str, str]:
    """The variables `names` of the running app's environment (/proc/<pid>/environ).

    Only the names the supervisor gave the app are kept: what the shell added on the way
    (PWD, SHLVL, ...) must not leak into a restart. Raises OSError if the app is not readable.
    """
    raw = (Path("/proc") / str(app.pid) / "environ").read_bytes()
    if not procinfo.is_alive(app):  # the pid was reused while we read: not our app's env
        raise ProcessLookupError(f"process {app.pid} exited while its environment was read")
    env: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        key = os.fsdecode(name)
        if sep and key in names:
            env[key] = os.fsdecode(value)
    return env


def launch_adopter_if_orphaned(
    instance_dir: Path, launch: Callable[[], subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes] | None:
    """Call `launch` (an adopting supervisor) if the app runs unsupervised: it, or None."""
    with _adopters_lock:
        status = StatusRecord.load(instance_dir)
        app = status.app if status else None
        if status is None or not needs_adoption(status.state, app, read_supervisor(instance_dir)):
            return None
        assert app is not None  # needs_adoption checked it
        pending, pending_app = _adopters.get(instance_dir, (None, None))
        if pending is not None and pending.poll() is None:
            return pending  # launched a moment ago and still starting
        if pending is not None and (pending.returncode or 0) > 0 and pending_app == app:
            return None  # it could not take this very app over (killed ones are retried)
        log.warning("the supervisor of %s died; adopting its running app", instance_dir.name)
        try:
            proc = launch()
        except RuntimeBackendError as exc:  # the app keeps serving unsupervised; retried later
            log.warning("cannot adopt %s: %s", instance_dir.name, exc)
            return None
        _adopters[instance_dir] = (proc, app)
        return proc


async def wait_until_adopted(
    instance_dir: Path, proc: subprocess.Popen[bytes], timeout: float
) -> bool:
    """Wait until a live supervisor (`proc` or a rival adopter) is recorded; log why not."""
    deadline = time.monotonic() + timeout
    while True:
        supervisor = read_supervisor(instance_dir)
        if supervisor is not None and procinfo.is_alive(supervisor):
            return True
        status = StatusRecord.load(instance_dir)
        app = status.app if status else None
        if status is None or status.state != InstanceState.RUNNING or app is None:
            return False  # stopped meanwhile: nothing left to adopt
        # Exit code 0: it lost the lock to a rival adopter, whose record comes next.
        if not procinfo.is_alive(app) or proc.poll() not in (None, 0):
            log.warning(
                "could not adopt %s: %s", instance_dir.name, supervisor_log_tail(instance_dir)
            )
            return False
        if time.monotonic() >= deadline:
            log.warning("adopting %s took over %ss", instance_dir.name, timeout)
            return False
        await asyncio.sleep(_POLL_INTERVAL)


def reap_adopters() -> None:
    """Collect exited adopters (no zombies); failed ones stay listed so they are not retried."""
    with _adopters_lock:
        for instance_dir, (adopter, _) in list(_adopters.items()):
            code = adopter.poll()
            if code is not None and code <= 0:
                del _adopters[instance_dir]


def forget_adopter(instance_dir: Path) -> None:
    """Drop what is known of the adopters of a removed instance."""
    with _adopters_lock:
        _adopters.pop(instance_dir, None)
