"""The per-instance supervisor shim: `python -m zerodown.runtimes.local.supervisor <instance_dir>`.

One supervisor per instance, detached from the control plane, so instances keep serving (and keep
being restarted) while the control plane crashes, restarts or is upgraded. It spawns the app in its
own process group, pipes its output into a rotating log, restarts it on unexpected exits and records
everything in `status.json`, which `LocalRuntime` reads. On SIGTERM it stops the app (SIGTERM to the
group, `stop_timeout`, SIGKILL) and exits 0; it never exits on purpose leaving the app behind.

If the supervisor itself is killed, the app keeps serving and its output waits in the pipe (see
`outputpipe`); `... supervisor --adopt <instance_dir>` then takes the running app over: it reopens
its output pipe, watches it through a pidfd (not being its parent, it never learns an exit code)
and from its first restart on supervises as usual (see `adoption`).

The files it writes are described in `instance_files`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from zerodown.runtimes.base import InstanceState
from zerodown.runtimes.local import procinfo
from zerodown.runtimes.local.adoption import (
    ZERODOWN_APP_VARIABLES,
    needs_adoption,
    read_app_environment,
    try_supervisor_lock,
)
from zerodown.runtimes.local.instance_files import (
    LOG_DIR,
    OUTPUT_LOG,
    STATUS_FILE,
    STOP_REQUEST_FILE,
    SUPERVISOR_FILE,
    SpecRecord,
    StatusRecord,
    read_json,
    read_supervisor,
    write_json_atomic,
)
from zerodown.runtimes.local.logfile import RotatingLogFile
from zerodown.runtimes.local.outputpipe import create_pipe, pipe_inode, reopen_pipe
from zerodown.runtimes.local.procinfo import ProcessIdentity
from zerodown.secrets.masking import SECRET_NAMES_ENV, StreamMasker

# The app's env values travel in the supervisor's process environment under this prefix, so they
# can never clash with what the supervisor's own Python needs (PYTHONPATH, LD_PRELOAD, ...).
APP_ENV_PREFIX = "ZERODOWN_APP_ENV__"
# Harmless variables of the supervisor's environment every app gets unless its spec overrides them:
# without PATH, `sh -c "java -jar app.jar"` finds nothing. Nothing else of the control plane leaks.
BASELINE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR")

_PUMP_CHUNK = 64 * 1024
_POLL_INTERVAL = 0.05
_KILL_WAIT = 5.0  # after SIGKILL a process group is gone in milliseconds; this is a safety bound
_PUMP_DRAIN = 2.0  # a process that escaped the group may hold the pipe open forever


class RestartBackoff:
    """Exponential restart delays (0.5 s, 1, 2, 4 ... capped), reset after a long enough run."""

    def __init__(self, first: float = 0.5, cap: float = 30.0, reset_after: float = 30.0) -> None:
        self.first = first
        self.cap = cap
        self.reset_after = reset_after
        self._next = first

    def delay_after(self, uptime: float) -> float:
        """The delay before the next start, given how long the app stayed up this time."""
        if uptime >= self.reset_after:
            self._next = self.first
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay


def app_environment(record: SpecRecord, environ: dict[str, str]) -> dict[str, str]:
    """The app's environment: baseline + spec env (from the prefixed variables) + ZERODOWN_*."""
    env = {name: environ[name] for name in BASELINE_ENV if name in environ}
    for name in record.env_names:
        value = environ.get(APP_ENV_PREFIX + name)
        if value is not None:
            env[name] = value
    env[record.port_env] = str(record.port)
    env["ZERODOWN_PORT"] = str(record.port)
    env["ZERODOWN_SERVICE"] = record.service
    env["ZERODOWN_REVISION"] = record.revision
    env["ZERODOWN_INSTANCE"] = record.instance_id
    return env


def app_variable_names(record: SpecRecord) -> set[str]:
    """Every variable name `app_environment` can give the app: what an adopter may read back."""
    return {*BASELINE_ENV, *record.env_names, record.port_env, *ZERODOWN_APP_VARIABLES}


def secret_values(record: SpecRecord, environ: dict[str, str]) -> list[str]:
    """Values of the app's env variables named in `ZERODOWN_SECRET_NAMES`: masked in its log."""
    return secret_values_in(record, app_environment(record, environ))


def secret_values_in(record: SpecRecord, app_env: dict[str, str]) -> list[str]:
    """Like `secret_values`, from the app's own environment (as an adopter reads it back)."""
    if SECRET_NAMES_ENV not in record.env_names:
        return []
    names = app_env.get(SECRET_NAMES_ENV, "").split(",")
    return [app_env[name] for name in names if name in record.env_names and name in app_env]


def _memory_limiter(limit: int | None) -> Callable[[], None] | None:
    """A preexec function that caps the child's address space (RLIMIT_AS), or None."""
    if limit is None:
        return None

    def apply_limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply_limit


@dataclass(frozen=True)
class AdoptedApp:
    """A running app taken over from a dead supervisor: its last status and its reopened pipe."""

    status: StatusRecord
    output_fd: int  # our new read end of the app's output pipe


class Supervisor:
    """Runs one instance's app until told to stop, restarting it per the spec's policy."""

    def __init__(self, instance_dir: Path, app_env: dict[str, str] | None = None) -> None:
        self.dir = instance_dir
        self.record = SpecRecord.load(instance_dir)
        self.log = RotatingLogFile(
            instance_dir / LOG_DIR / OUTPUT_LOG,
            max_bytes=self.record.log_max_bytes,
            backups=self.record.log_backups,
        )
        self.stop_requested = asyncio.Event()
        self.status = StatusRecord(state=InstanceState.STARTING, port=self.record.port)
        self._log_error_reported = False
        self._exit_requested = False  # whether the app's last exit was one we asked for
        # In memory only: an adopter passes what it read back from the running app.
        self._app_env = (
            app_environment(self.record, dict(os.environ)) if app_env is None else app_env
        )
        # The app's secrets never reach its log file in plain text (see `zerodown.secrets`).
        self._secrets = secret_values_in(self.record, self._app_env)

    async def run(self, adopted: AdoptedApp | None = None) -> int:
        """Supervise until stopped (exit 0), the policy says done (0) or the app cannot run (1)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_requested.set)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        me = procinfo.identify(os.getpid())
        assert me is not None  # we are running, so /proc/self exists
        write_json_atomic(
            self.dir / SUPERVISOR_FILE,
            {"pid": me.pid, "start_ticks": me.start_ticks, "adopted": adopted is not None},
        )
        backoff = RestartBackoff()
        if adopted is not None:
            code, uptime = await self._watch_adopted(adopted)
            done = await self._after_exit(code, uptime, backoff)
            if done is not None:
                return done
        while not self.stop_requested.is_set():
            self.record_status(state=InstanceState.STARTING)
            try:
                proc, output_fd = self._spawn()
            except OSError as exc:  # e.g. the workdir is gone: no restart can fix that
                print(f"cannot start the app: {exc}", file=sys.stderr, flush=True)
                self.record_status(state=InstanceState.FAILED, app_pid=None, app_start_ticks=None)
                return 1
            started = time.monotonic()
            code = await self._watch(self.status.app, output_fd, _leader_exit(proc), proc.wait)
            done = await self._after_exit(code, time.monotonic() - started, backoff)
            if done is not None:
                return done
        self.record_status(state=InstanceState.STOPPED)
        return 0

    async def _after_exit(
        self, code: int | None, uptime: float, backoff: RestartBackoff
    ) -> int | None:
        """Record the app's exit: our exit code if we are done, else None after the backoff."""
        crashes = self.status.crashes + (0 if self._exit_requested else 1)
        if self.stop_requested.is_set() or self.record.restart == "no":
            self.record_status(
                state=InstanceState.STOPPED, exit_code=code, app_start_ticks=None, crashes=crashes
            )
            return 0
        delay = backoff.delay_after(uptime)
        shown = "an unknown code (not our child)" if code is None else code
        print(f"app exited with {shown}; restarting in {delay:.1f}s", file=sys.stderr, flush=True)
        self.record_status(
            state=InstanceState.RESTARTING,
            exit_code=code,
            restarts=self.status.restarts + 1,
            crashes=crashes,
            app_start_ticks=None,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_requested.wait(), delay)
        return None

    def _spawn(self) -> tuple[subprocess.Popen[bytes], int]:
        """Start `/bin/sh -c <command>` in its own session; return it and its output's read end."""
        read_fd, write_fd = create_pipe()
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", self.record.command],
                cwd=self.record.workdir,
                env=self._app_env,
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                # The app keeps a read end of its own output pipe: see `outputpipe`.
                pass_fds=(read_fd,),
                # Its own session: a signal to the supervisor's group never reaches the app.
                start_new_session=True,
                preexec_fn=_memory_limiter(self.record.memory_limit),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        # Until we reap it the pid cannot be reused, so this stat is the app's (even a zombie's).
        stat = procinfo.read_stat(proc.pid)
        self.record_status(
            state=InstanceState.RUNNING,
            app_pid=proc.pid,
            app_start_ticks=stat.start_ticks if stat else None,
            output_fd=read_fd,  # pass_fds keeps the number: the app holds it as this fd too
            output_inode=pipe_inode(read_fd),
        )
        return proc, read_fd

    async def _watch_adopted(self, adopted: AdoptedApp) -> tuple[int | None, float]:
        """Watch an app we did not spawn until it exits or we stop it: (None, uptime)."""
        self.status = adopted.status
        self.record_status(state=InstanceState.RUNNING)
        app = adopted.status.app
        assert app is not None  # adoption checked it runs
        print(f"adopted the running app (pid {app.pid})", file=sys.stderr, flush=True)
        # Not our child: nobody hands us its exit code, and there is nothing to reap.
        code = await self._watch(app, adopted.output_fd, _identity_exit(app), lambda: None)
        return code, time.time() - procinfo.started_at(app)

    async def _watch(
        self,
        app: ProcessIdentity | None,
        output_fd: int,
        leader_exit: Coroutine[Any, Any, None],
        reap: Callable[[], int | None],
    ) -> int | None:
        """Pump the app's output until it exits or a stop request ends it; return `reap()`."""
        pump = asyncio.create_task(self._pump(output_fd))
        exited = asyncio.create_task(leader_exit)
        stop = asyncio.create_task(self.stop_requested.wait())
        await asyncio.wait({exited, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        self._exit_requested = not exited.done()  # else it exited on its own: a crash
        if not exited.done():
            self.record_status(state=InstanceState.STOPPING)
            await self._stop_app(app, exited)
        await exited
        if app is not None:
            # Leftovers of the group (children of the shell) must not outlive it: a restarted
            # app would fight them for the port, a stopped one would leave them running. The
            # leader is not reaped yet, so its pid (the group id) cannot have been reused.
            procinfo.signal_group(app, signal.SIGKILL)
            await wait_until(lambda: not procinfo.group_alive(app), _KILL_WAIT)
        code = reap()  # the leader has exited: this only reaps it
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(pump), _PUMP_DRAIN)
        pump.cancel()
        return code

    async def _stop_app(self, app: ProcessIdentity | None, exited: asyncio.Task[None]) -> None:
        """SIGTERM the app's group, wait `stop_timeout` for all of it, then SIGKILL the group."""
        if app is None:
            return
        procinfo.signal_group(app, signal.SIGTERM)
        request = read_json(self.dir / STOP_REQUEST_FILE) or {}
        timeout = float(request.get("timeout", self.record.stop_timeout))
        if await wait_until(lambda: not procinfo.group_alive(app), timeout):
            return
        print(f"app ignored SIGTERM for {timeout}s: SIGKILL", file=sys.stderr, flush=True)
        procinfo.signal_group(app, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(exited), _KILL_WAIT)

    async def _pump(self, output_fd: int) -> None:
        """Copy the app's output into the rotating log until EOF; never block the app on errors."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2 * _PUMP_CHUNK)
        # Wrapping an open fd does no I/O; the transport closes the file.
        pipe = open(output_fd, "rb", buffering=0)  # noqa: ASYNC230, SIM115
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        masker = StreamMasker.for_values(self._secrets)
        try:
            while chunk := await reader.read(_PUMP_CHUNK):
                self._write_log(masker.feed(chunk))
        finally:
            self._write_log(masker.flush())
            transport.close()
            self.log.close()

    def _write_log(self, data: bytes) -> None:
        try:
            self.log.write(data)
        except OSError as exc:  # disk full: drop output rather than stall the app
            if not self._log_error_reported:
                print(f"cannot write the app log: {exc}", file=sys.stderr, flush=True)
                self._log_error_reported = True

    def record_status(self, **changes: Any) -> None:
        """Update the in-memory status and write it to `status.json` atomically."""
        self.status = replace(self.status, **changes)
        try:
            self.status.save(self.dir)
        except OSError as exc:  # losing one status write must not take the app down
            print(f"cannot write {STATUS_FILE}: {exc}", file=sys.stderr, flush=True)

    def kill_app(self) -> None:
        """Last resort on an internal error: never leave the app running behind our back."""
        app = self.status.app
        if app is not None:
            procinfo.signal_group(app, signal.SIGKILL)


async def _leader_exit(proc: subprocess.Popen[bytes]) -> None:
    """Return once the app's leader process has exited, without reaping it (a pidfd event).

    Waiting on the pid, not on the pipe, matters: children of the shell may hold the pipe open
    long after the leader died, and asyncio's own `Process.wait()` waits for the pipes too.
    """
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:  # kernels before 5.3: poll (this reaps, which is fine without a pidfd)
        await wait_until(lambda: proc.poll() is not None, math.inf)
        return
    try:
        await _readable(pidfd)
    finally:
        os.close(pidfd)


async def _identity_exit(app: ProcessIdentity) -> None:
    """Return once `app`, which need not be our child, has exited (a pidfd event)."""
    try:
        pidfd = os.pidfd_open(app.pid)
    except ProcessLookupError:
        return
    except OSError:  # kernels before 5.3
        await wait_until(lambda: not procinfo.is_alive(app), math.inf)
        return
    try:
        if procinfo.is_alive(app):  # else it exited (or the pid was reused) before the open
            await _readable(pidfd)
    finally:
        os.close(pidfd)


async def _readable(fd: int) -> None:
    """Wait until `fd` polls readable (for a pidfd: its process has exited)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, on_readable)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def wait_until(
    condition: Callable[[], bool], timeout: float, interval: float = _POLL_INTERVAL
) -> bool:
    """Poll `condition` every `interval` seconds for up to `timeout` seconds; True once it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)
    return True


def _prepare_adoption(instance_dir: Path) -> tuple[Supervisor, AdoptedApp] | None:
    """Read back what a new supervisor needs to take the running app over; None: nothing to do.

    Raises OSError when the app runs but cannot be taken over (its pipe or env is unreadable).
    """
    status = StatusRecord.load(instance_dir)
    app = status.app if status else None
    if status is None or not needs_adoption(status.state, app, read_supervisor(instance_dir)):
        print("nothing to adopt: the app is not running unsupervised", file=sys.stderr)
        return None
    assert app is not None  # needs_adoption checked it
    if status.output_fd is None or status.output_inode is None:
        raise OSError("no output pipe recorded (the app was started by an older zerodown)")
    record = SpecRecord.load(instance_dir)
    app_env = read_app_environment(app, app_variable_names(record))
    output_fd = reopen_pipe(app.pid, status.output_fd, status.output_inode)
    return Supervisor(instance_dir, app_env), AdoptedApp(status=status, output_fd=output_fd)


async def _main(instance_dir: Path, *, adopt: bool) -> int:
    # Held until this process exits, however it exits: one supervisor per instance, ever.
    lock_fd = try_supervisor_lock(instance_dir)
    if lock_fd is None:
        print("another supervisor already runs for this instance", file=sys.stderr, flush=True)
        return 0 if adopt else 1
    adopted: AdoptedApp | None = None
    if adopt:
        try:
            prepared = _prepare_adoption(instance_dir)
        except OSError as exc:  # the app keeps running unsupervised, as it did before
            print(f"cannot adopt the app: {exc}", file=sys.stderr, flush=True)
            return 1
        if prepared is None:
            return 0
        supervisor, adopted = prepared
    else:
        supervisor = Supervisor(instance_dir)
    try:
        return await supervisor.run(adopted)
    except Exception:
        traceback.print_exc()
        supervisor.kill_app()
        supervisor.record_status(state=InstanceState.FAILED)
        return 1


def main(argv: list[str] | None = None) -> int:
    """Entry point: supervise (or with `--adopt`, take over) the instance in the one argument."""
    args = sys.argv[1:] if argv is None else argv
    adopt = args[:1] == ["--adopt"]
    if adopt:
        args = args[1:]
    if len(args) != 1:
        print(
            "usage: python -m zerodown.runtimes.local.supervisor [--adopt] <instance_dir>",
            file=sys.stderr,
        )
        return 2
    return asyncio.run(_main(Path(args[0]), adopt=adopt))


if __name__ == "__main__":
    sys.exit(main())
