"""The HAProxy process: started detached in master-worker mode, reloaded hitlessly through the
master CLI, stopped gracefully.

`haproxy -W -D -S master.sock -f haproxy.cfg -p haproxy.pid` daemonizes, so the master outlives
whoever started it. A reload re-executes the master, which starts a new worker with the listening
sockets of the old one (`expose-fd listeners`: no connection is refused), and the old worker
finishes what it serves (at most `hard-stop-after`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from zerodown.errors import RouterError, RouterUnavailable
from zerodown.routers.haproxy.runtime_api import RuntimeApi, SocketAddress
from zerodown.routers.haproxy.state import HaproxyPaths

START_TIMEOUT = 20.0
RELOAD_TIMEOUT = 20.0


@dataclass(frozen=True)
class ProcessInfo:
    """One line of the master's `show proc`."""

    pid: int
    kind: str  # master | worker
    reloads: int  # for a worker: how many reloads ago it was started (0: the current one)
    failed: int  # for the master: reloads that failed
    uptime: str
    version: str


def master_cli(paths: HaproxyPaths, timeout: float = 5.0) -> RuntimeApi:
    """A client of the master CLI."""
    return RuntimeApi(SocketAddress(unix=str(paths.master_socket)), timeout=timeout)


def parse_show_proc(text: str) -> list[ProcessInfo]:
    """The master's `show proc` as rows (workers first in the list are the current ones)."""
    found = []
    for line in text.splitlines():
        words = line.split()
        if not words or not words[0].isdigit() or len(words) < 4:
            continue
        failed = 0
        if "[failed:" in line:
            with contextlib.suppress(ValueError):
                failed = int(line.split("[failed:")[1].split("]")[0])
        rest = [w for w in words[3:] if not w.startswith("[failed") and not w.endswith("]")]
        found.append(
            ProcessInfo(
                pid=int(words[0]),
                kind=words[1],
                reloads=int(words[2]) if words[2].isdigit() else 0,
                failed=failed,
                uptime=rest[0] if rest else "",
                version=rest[1] if len(rest) > 1 else "",
            )
        )
    return found


async def show_proc(paths: HaproxyPaths) -> list[ProcessInfo]:
    """The master and its workers; RouterUnavailable when no master answers."""
    return parse_show_proc(await master_cli(paths).run_once("show proc"))


def current_workers(procs: list[ProcessInfo]) -> list[ProcessInfo]:
    """The workers started by the last (re)load (old ones still finishing are left out)."""
    workers = [p for p in procs if p.kind == "worker"]
    if not workers:
        return []
    newest = min(p.reloads for p in workers)
    return [p for p in workers if p.reloads == newest]


def master_pid(paths: HaproxyPaths) -> int | None:
    """The pid in haproxy.pid if that process lives."""
    try:
        pid = int(paths.pidfile.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def check_config(binary: str, config: Path) -> None:
    """`haproxy -c`: RouterError with HAProxy's own words when the file is invalid."""
    try:
        result = subprocess.run(
            [binary, "-c", "-q", "-f", str(config)], capture_output=True, text=True, timeout=30
        )
    except FileNotFoundError as exc:
        raise RouterError(
            f"cannot run HAProxy `{binary}`: install haproxy (2.4 or newer) or set "
            "`router: {backend: haproxy, binary: /path/to/haproxy}`"
        ) from exc
    if result.returncode != 0:
        said = (result.stderr or result.stdout).strip()[-2000:]
        raise RouterError(f"HAProxy rejects the configuration zerodown wrote ({config}): {said}")


def _log_tail(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace").strip()[-2000:] or "(nothing)"
    except FileNotFoundError:
        return "(no log)"


async def start(binary: str, paths: HaproxyPaths, *, timeout: float = START_TIMEOUT) -> int:
    """Start HAProxy detached (its own session, daemonized); the master's pid once it answers."""
    check_config(binary, paths.config)
    offset = paths.log.stat().st_size if paths.log.exists() else 0
    command = [
        binary,
        "-W",
        "-D",
        "-S",
        f"{paths.master_socket},mode,600",
        "-f",
        str(paths.config),
        "-p",
        str(paths.pidfile),
    ]
    with paths.log.open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not in our process group: our Ctrl-C is not its SIGINT
        )
    code = await process.wait()  # -D: the foreground process exits once the master runs
    if code != 0:
        raise RouterError(
            f"HAProxy exited with code {code} during start; {paths.log} says: "
            f"{_log_tail(paths.log, offset)}"
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(RouterError):
            procs = await show_proc(paths)
            if current_workers(procs):
                return next(p.pid for p in procs if p.kind == "master")
        await asyncio.sleep(0.05)  # no event to await across processes: poll with a deadline
    raise RouterError(
        f"HAProxy did not answer on {paths.master_socket} within {timeout:.0f} s; "
        f"{paths.log} says: {_log_tail(paths.log, offset)}"
    )


async def reload(binary: str, paths: HaproxyPaths, *, timeout: float = RELOAD_TIMEOUT) -> list[int]:
    """Hitless reload through the master CLI; the new workers' pids.

    The configuration is checked first, so a bad file never reaches the running master; a
    reload the master reports failed (its `failed` count grows) raises RouterError while the old
    workers keep serving.
    """
    check_config(binary, paths.config)
    try:
        before = await show_proc(paths)
    except RouterUnavailable as exc:
        raise RouterUnavailable(f"{exc}; there is no running HAProxy to reload") from exc
    old_workers = {p.pid for p in current_workers(before)}
    master = next((p for p in before if p.kind == "master"), None)
    failed_before = master.failed if master else 0
    offset = paths.log.stat().st_size if paths.log.exists() else 0
    await master_cli(paths).run_once("reload", check=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # the master re-executes: poll its CLI with a deadline
        try:
            procs = await show_proc(paths)
        except RouterError:
            continue
        master = next((p for p in procs if p.kind == "master"), None)
        if master is not None and master.failed > failed_before:
            raise RouterError(
                "HAProxy's reload failed and the old workers keep serving; "
                f"{paths.log} says: {_log_tail(paths.log, offset)}"
            )
        new = [p.pid for p in current_workers(procs) if p.pid not in old_workers]
        if new:
            return new
    raise RouterError(f"no new HAProxy worker came up within {timeout:.0f} s of the reload")


def alive(pid: int) -> bool:
    """Whether process `pid` exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def stop(paths: HaproxyPaths, *, grace: float) -> list[int]:
    """SIGUSR1 to the master (workers finish what they serve), SIGTERM after `grace` seconds,
    SIGKILL 5 s later; the pids that were stopped, empty when none ran."""
    pid = master_pid(paths)
    if pid is None:
        return []
    pids = [pid]
    with contextlib.suppress(RouterError):
        pids += [p.pid for p in await show_proc(paths) if p.kind == "worker"]
    for sig, wait in ((signal.SIGUSR1, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(alive(p) for p in pids):  # noqa: ASYNC110 (no event across processes)
            await asyncio.sleep(0.05)  # a detached process: poll with a deadline
        if not any(alive(p) for p in pids):
            break
        if sig is signal.SIGKILL:
            for worker in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker, signal.SIGKILL)
    for path in (paths.master_socket, paths.admin_socket):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return pids
