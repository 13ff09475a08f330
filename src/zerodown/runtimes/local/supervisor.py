"""The per-instance supervisor shim: `python -m zerodown.runtimes.local.supervisor <instance_dir>`.

One supervisor per instance, detached from the control plane, so instances keep serving (and keep
being restarted) while the control plane crashes, restarts or is upgraded. It spawns the app in its
own process group, pipes its output into a rotating log, restarts it on unexpected exits and records
everything in `status.json`, which `LocalRuntime` reads. On SIGTERM it stops the app (SIGTERM to the
group, `stop_timeout`, SIGKILL) and exits 0; it never exits on purpose leaving the app behind.

This module also owns the on-disk layout of an instance directory, shared with `runtime.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import resource
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any

from zerodown.runtimes.base import InstanceSpec, InstanceState
from zerodown.runtimes.local import procinfo
from zerodown.runtimes.local.logfile import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, RotatingLogFile
from zerodown.runtimes.local.procinfo import ProcessIdentity
from zerodown.secrets.masking import SECRET_NAMES_ENV, StreamMasker

SPEC_FILE = "spec.json"
SUPERVISOR_FILE = "supervisor.json"
STATUS_FILE = "status.json"
SUPERVISOR_LOG = "supervisor.log"
# {"timeout": seconds}, written by `LocalRuntime.stop()` just before SIGTERM: its timeout wins.
STOP_REQUEST_FILE = "stop-request.json"
LOG_DIR = "logs"
OUTPUT_LOG = "output.log"

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


@dataclass(frozen=True)
class SpecRecord:
    """`spec.json`: the instance spec as run, with env variable *names* only (values are secret)."""

    service: str
    revision: str
    instance_id: str
    command: str
    workdir: str
    env_names: list[str]
    port_env: str
    host: str
    port: int
    stop_timeout: float
    memory_limit: int | None
    restart: str
    labels: dict[str, str]
    log_max_bytes: int = DEFAULT_MAX_BYTES
    log_backups: int = DEFAULT_BACKUPS

    @classmethod
    def from_spec(
        cls, spec: InstanceSpec, port: int, *, log_max_bytes: int, log_backups: int
    ) -> SpecRecord:
        """Record `spec` with its assigned `port`, dropping every env value."""
        return cls(
            service=spec.service,
            revision=spec.revision,
            instance_id=spec.instance_id,
            command=spec.command,
            workdir=spec.workdir,
            env_names=sorted(spec.env),
            port_env=spec.port_env,
            host=spec.host,
            port=port,
            stop_timeout=spec.stop_timeout,
            memory_limit=spec.memory_limit,
            restart=spec.restart,
            labels=dict(spec.labels),
            log_max_bytes=log_max_bytes,
            log_backups=log_backups,
        )

    @classmethod
    def load(cls, instance_dir: Path) -> SpecRecord:
        """Read `spec.json` of `instance_dir`."""
        data = read_json(instance_dir / SPEC_FILE)
        if data is None:
            raise FileNotFoundError(instance_dir / SPEC_FILE)
        return cls(**data)


@dataclass(frozen=True)
class StatusRecord:
    """`status.json`: what the supervisor last observed. Exit codes < 0 mean killed by -code."""

    state: str
    port: int
    app_pid: int | None = None
    app_start_ticks: int | None = None
    restarts: int = 0
    exit_code: int | None = None
    updated_at: float = 0.0

    @property
    def app(self) -> ProcessIdentity | None:
        """The identity of the app process last spawned, if it was seen alive."""
        if self.app_pid is None or self.app_start_ticks is None:
            return None
        return ProcessIdentity(self.app_pid, self.app_start_ticks)

    @classmethod
    def load(cls, instance_dir: Path) -> StatusRecord | None:
        """Read `status.json`; None until the supervisor wrote it."""
        data = read_json(instance_dir / STATUS_FILE)
        return None if data is None else cls(**data)

    def save(self, instance_dir: Path) -> None:
        """Write `status.json` atomically, stamped with the current time."""
        data = asdict(self)
        data["updated_at"] = time.time()
        write_json_atomic(instance_dir / STATUS_FILE, data)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON through a temporary file and a rename, so readers see old or new, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """Read a JSON object; None when the file does not exist."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return data


def read_supervisor(instance_dir: Path) -> ProcessIdentity | None:
    """The supervisor's identity as recorded in `supervisor.json`, if written yet."""
    data = read_json(instance_dir / SUPERVISOR_FILE)
    return None if data is None else ProcessIdentity(data["pid"], data["start_ticks"])


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


def secret_values(record: SpecRecord, environ: dict[str, str]) -> list[str]:
    """Values of the app's env variables named in `ZERODOWN_SECRET_NAMES`: masked in its log."""
    if SECRET_NAMES_ENV not in record.env_names:
        return []
    names = environ.get(APP_ENV_PREFIX + SECRET_NAMES_ENV, "").split(",")
    return [
        environ[APP_ENV_PREFIX + name]
        for name in names
        if name in record.env_names and APP_ENV_PREFIX + name in environ
    ]


def _memory_limiter(limit: int | None) -> Callable[[], None] | None:
    """A preexec function that caps the child's address space (RLIMIT_AS), or None."""
    if limit is None:
        return None

    def apply_limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply_limit


class Supervisor:
    """Runs one instance's app until told to stop, restarting it per the spec's policy."""

    def __init__(self, instance_dir: Path) -> None:
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
        # The app's secrets never reach its log file in plain text (see `zerodown.secrets`).
        self._secrets = secret_values(self.record, dict(os.environ))

    async def run(self) -> int:
        """Supervise until stopped (exit 0), the policy says done (0) or the app cannot run (1)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_requested.set)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        me = procinfo.identify(os.getpid())
        assert me is not None  # we are running, so /proc/self exists
        write_json_atomic(
            self.dir / SUPERVISOR_FILE, {"pid": me.pid, "start_ticks": me.start_ticks}
        )
        backoff = RestartBackoff()
        while not self.stop_requested.is_set():
            self.record_status(state=InstanceState.STARTING)
            try:
                proc = self._spawn()
            except OSError as exc:  # e.g. the workdir is gone: no restart can fix that
                print(f"cannot start the app: {exc}", file=sys.stderr, flush=True)
                self.record_status(state=InstanceState.FAILED, app_pid=None, app_start_ticks=None)
                return 1
            code, uptime = await self._watch(proc)
            if self.stop_requested.is_set():
                self.record_status(
                    state=InstanceState.STOPPED, exit_code=code, app_start_ticks=None
                )
                return 0
            if self.record.restart == "no":
                self.record_status(
                    state=InstanceState.STOPPED, exit_code=code, app_start_ticks=None
                )
                return 0
            delay = backoff.delay_after(uptime)
            print(
                f"app exited with {code}; restarting in {delay:.1f}s", file=sys.stderr, flush=True
            )
            self.record_status(
                state=InstanceState.RESTARTING,
                exit_code=code,
                restarts=self.status.restarts + 1,
                app_start_ticks=None,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_requested.wait(), delay)
        self.record_status(state=InstanceState.STOPPED)
        return 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Start `/bin/sh -c <command>` in its own session, output piped to us."""
        proc = subprocess.Popen(
            ["/bin/sh", "-c", self.record.command],
            cwd=self.record.workdir,
            env=app_environment(self.record, dict(os.environ)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Its own session: a signal to the supervisor's group never reaches the app.
            start_new_session=True,
            preexec_fn=_memory_limiter(self.record.memory_limit),
        )
        # Until we reap it the pid cannot be reused, so this stat is the app's (even a zombie's).
        stat = procinfo.read_stat(proc.pid)
        self.record_status(
            state=InstanceState.RUNNING,
            app_pid=proc.pid,
            app_start_ticks=stat.start_ticks if stat else None,
        )
        return proc

    async def _watch(self, proc: subprocess.Popen[bytes]) -> tuple[int, float]:
        """Wait for the app to exit or for a stop request; return (exit code, uptime)."""
        started = time.monotonic()
        app = self.status.app
        assert proc.stdout is not None
        pump = asyncio.create_task(self._pump(proc.stdout))
        exited = asyncio.create_task(_leader_exit(proc))
        stop = asyncio.create_task(self.stop_requested.wait())
        await asyncio.wait({exited, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not exited.done():
            self.record_status(state=InstanceState.STOPPING)
            await self._stop_app(app, exited)
        await exited
        uptime = time.monotonic() - started
        if app is not None:
            # Leftovers of the group (children of the shell) must not outlive it: a restarted
            # app would fight them for the port, a stopped one would leave them running. The
            # leader is not reaped yet, so its pid (the group id) cannot have been reused.
            procinfo.signal_group(app, signal.SIGKILL)
            await wait_until(lambda: not procinfo.group_alive(app), _KILL_WAIT)
        code = proc.wait()  # the leader has exited: this only reaps it
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(pump), _PUMP_DRAIN)
        pump.cancel()
        return code, uptime

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

    async def _pump(self, pipe: IO[bytes]) -> None:
        """Copy the app's output into the rotating log until EOF; never block the app on errors."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2 * _PUMP_CHUNK)
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
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:  # kernels before 5.3: poll (this reaps, which is fine without a pidfd)
        await wait_until(lambda: proc.poll() is not None, math.inf)
        return
    exited: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, on_readable)
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


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


async def _main(instance_dir: Path) -> int:
    supervisor = Supervisor(instance_dir)
    try:
        return await supervisor.run()
    except Exception:
        traceback.print_exc()
        supervisor.kill_app()
        supervisor.record_status(state=InstanceState.FAILED)
        return 1


def main(argv: list[str] | None = None) -> int:
    """Entry point: supervise the instance whose directory is the single argument."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m zerodown.runtimes.local.supervisor <instance_dir>", file=sys.stderr)
        return 2
    return asyncio.run(_main(Path(args[0])))


if __name__ == "__main__":
    sys.exit(main())
