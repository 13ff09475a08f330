"""`LocalRuntime`: instances as local processes, each watched by a detached supervisor shim.

The control plane only launches supervisors and reads the files they write, so it can crash,
restart or be upgraded while instances keep serving; a new `LocalRuntime` over the same
`state_dir` finds every instance again (the files are described in `instance_files`). An app
whose supervisor died gets a new one (`adopt_orphans`, also started by `list`; see `adoption`).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict
from pathlib import Path

import zerodown
from zerodown.errors import ConfigError, InstanceNotFound, RuntimeBackendError
from zerodown.runtimes.base import (
    ArtifactKind,
    InstanceInfo,
    InstanceSpec,
    InstanceState,
    ReleaseDirectory,
)
from zerodown.runtimes.local import procinfo
from zerodown.runtimes.local.adoption import (
    forget_adopter,
    launch_adopter_if_orphaned,
    reap_adopters,
    supervisor_lock,
    wait_until_adopted,
)
from zerodown.runtimes.local.exited import (
    EXITED_DIR,
    crashed,
    exited_dirs,
    exited_info,
    keep_output,
    output_complete,
    output_files,
)
from zerodown.runtimes.local.instance_files import (
    LOG_DIR,
    OUTPUT_LOG,
    SPEC_FILE,
    STATUS_FILE,
    STOP_REQUEST_FILE,
    SUPERVISOR_FILE,
    SUPERVISOR_LOG,
    SpecRecord,
    StatusRecord,
    read_supervisor,
    supervisor_log_tail,
    write_json_atomic,
)
from zerodown.runtimes.local.logfile import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, read_tail
from zerodown.runtimes.local.logreader import output_lines
from zerodown.runtimes.local.procinfo import ProcessIdentity
from zerodown.runtimes.local.supervisor import APP_ENV_PREFIX, wait_until
from zerodown.runtimes.ports import RESERVATIONS

_INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_POLL_INTERVAL = 0.02
_KILL_WAIT = 5.0  # how long a SIGKILLed process may take to vanish before we call it stuck
# The supervisor drains an exited app's pipe for up to 2 s before it records the exit.
_OUTPUT_SETTLE = 3.0

log = logging.getLogger(__name__)

# Supervisors this process launched, by instance dir: kept only to reap them (no zombies) and to
# notice one that dies during start. Module-wide so a discarded LocalRuntime leaves none unreaped;
# adopted supervisors are known through their files alone.
_children: dict[Path, subprocess.Popen[bytes]] = {}


class LocalRuntime:
    """Runs instances as local processes that outlive the control plane (Runtime "local")."""

    name = "local"
    artifacts = frozenset({ArtifactKind.DIRECTORY})

    def __init__(
        self,
        state_dir: Path,
        *,
        host: str = "127.0.0.1",
        log_max_bytes: int = DEFAULT_MAX_BYTES,
        log_backups: int = DEFAULT_BACKUPS,
        spawn_timeout: float = 15.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.host = host  # where every instance listens (and the router reaches it)
        self.instances_dir = self.state_dir / "instances"
        self.exited_dir = self.state_dir / EXITED_DIR
        self.log_max_bytes = log_max_bytes
        self.log_backups = log_backups
        self.spawn_timeout = spawn_timeout

    async def start(self, spec: InstanceSpec) -> InstanceInfo:
        """Launch the instance's supervisor; return once it has spawned the app."""
        release = spec.artifact
        if not isinstance(release, ReleaseDirectory):
            raise RuntimeBackendError(
                f"the local runtime runs release directories, not {release.kind} artifacts: "
                "use `runtime: {backend: docker}` for images"
            )
        instance_dir = self._dir_for(spec.instance_id)
        _reap_children()
        await asyncio.to_thread(self._prepare_dir, instance_dir)
        port = spec.port
        if port is None:
            port = await asyncio.to_thread(RESERVATIONS.allocate, self.host, self._recorded_ports)
        try:
            record = SpecRecord.from_spec(
                spec,
                release,
                self.host,
                port,
                log_max_bytes=self.log_max_bytes,
                log_backups=self.log_backups,
            )
            await asyncio.to_thread(write_json_atomic, instance_dir / SPEC_FILE, asdict(record))
            proc = await asyncio.to_thread(self._launch_supervisor, instance_dir, spec.env)
            _children[instance_dir] = proc
            await self._wait_until_spawned(instance_dir, proc)
        except BaseException:
            if spec.port is None:
                RESERVATIONS.release(self.host, port)
            raise
        return await self.inspect(spec.instance_id)

    async def stop(self, instance_id: str, *, timeout: float | None = None) -> InstanceInfo:
        """Stop the instance (SIGTERM, `timeout`, SIGKILL) and return it STOPPED. Idempotent."""
        instance_dir = self._existing_dir(instance_id)
        record = await asyncio.to_thread(SpecRecord.load, instance_dir)
        grace = record.stop_timeout if timeout is None else timeout
        deadline = time.monotonic() + self.spawn_timeout
        while True:
            supervisor = read_supervisor(instance_dir)
            if supervisor is not None and procinfo.is_alive(supervisor):
                await self._stop_through_supervisor(instance_dir, supervisor, grace)
                _record_stopped(instance_dir, record.port)
                break
            # Holding the lock while stopping keeps an adopter from taking over the app.
            with supervisor_lock(instance_dir) as locked:
                if locked or time.monotonic() >= deadline:
                    await _stop_group(self._recorded_app(instance_dir), grace)
                    _record_stopped(instance_dir, record.port)
                    break
            await asyncio.sleep(_POLL_INTERVAL)  # an adopter holds it: stop through it once up
        _reap_children()
        RESERVATIONS.release(record.host, record.port)
        return await self.inspect(instance_id)

    async def inspect(self, instance_id: str) -> InstanceInfo:
        """Current state of one instance, with every recorded pid checked against its start time."""
        instance_dir = self._existing_dir(instance_id)
        _reap_children()
        return await asyncio.to_thread(self._read_info, instance_dir)

    async def list(self, service: str | None = None) -> list[InstanceInfo]:
        """Every instance under `state_dir` (running or not), optionally of one service.

        Apps found running without a supervisor get one launched (not awaited: see
        `adopt_orphans`), so any control plane that looks at its instances heals them.
        """
        _reap_children()
        infos = await asyncio.to_thread(self._read_all, service)
        for info in infos:
            if info.labels.get("supervised") == "false" and info.state == InstanceState.RUNNING:
                await asyncio.to_thread(self._launch_adopter, self._dir_for(info.instance_id))
        return infos

    async def adopt_orphans(self) -> builtins.list[str]:
        """Give every app that outlived its supervisor a new one; return the ids now supervised.

        Safe to call from several control planes at once: one adopter wins each instance's lock.
        """
        _reap_children()
        launched = [
            (instance_dir, proc)
            for instance_dir in await asyncio.to_thread(self._instance_dirs)
            if (proc := await asyncio.to_thread(self._launch_adopter, instance_dir))
        ]
        adopted = []
        for instance_dir, proc in launched:
            if await wait_until_adopted(instance_dir, proc, self.spawn_timeout):
                adopted.append(instance_dir.name)
        return adopted

    async def remove(self, instance_id: str) -> None:
        """Delete the files of a stopped instance; refuse one that still runs."""
        instance_dir = self._existing_dir(instance_id)
        info = await self.inspect(instance_id)
        app = self._recorded_app(instance_dir)
        if info.state not in (InstanceState.STOPPED, InstanceState.FAILED) or (
            app is not None and procinfo.group_alive(app)
        ):
            raise RuntimeBackendError(
                f"instance {instance_id!r} is {info.state}: stop it before removing it"
            )
        _children.pop(instance_dir, None)
        forget_adopter(instance_dir)
        if crashed(StatusRecord.load(instance_dir)):
            try:  # the crash's traceback must outlive the rollback that removes the instance
                await asyncio.to_thread(keep_output, instance_dir, self.exited_dir)
            except OSError as exc:
                log.warning("could not keep the output of %s: %s", instance_id, exc)
        await asyncio.to_thread(shutil.rmtree, instance_dir)

    async def output_tail(
        self, instance_id: str, lines: int, *, max_bytes: int | None = None
    ) -> builtins.list[str]:
        """The last `lines` lines of output (masked by the supervisor), of a removed one too.

        Right after the app exited, waits (bounded) until its supervisor has read the last of it.
        """
        try:
            instance_dir = self._existing_dir(instance_id)
        except InstanceNotFound:
            kept = self.exited_dir / instance_id / LOG_DIR
            if not kept.is_dir():
                raise
            return await asyncio.to_thread(read_tail, output_files(kept, 0), lines, max_bytes)
        await wait_until(lambda: output_complete(instance_dir), _OUTPUT_SETTLE, _POLL_INTERVAL)
        record = await asyncio.to_thread(SpecRecord.load, instance_dir)
        files = output_files(instance_dir / LOG_DIR, record.log_backups)
        return await asyncio.to_thread(read_tail, files, lines, max_bytes)

    async def logs(
        self, instance_id: str, *, since: float | None = None, follow: bool = False
    ) -> AsyncIterator[str]:
        """Output lines from the instance's files (masked by its supervisor), of a kept one too."""
        try:
            instance_dir = self._existing_dir(instance_id)
            record = await asyncio.to_thread(SpecRecord.load, instance_dir)
            files = output_files(instance_dir / LOG_DIR, record.log_backups)
        except InstanceNotFound:
            kept = self.exited_dir / instance_id / LOG_DIR
            if not kept.is_dir():
                raise
            files, follow = output_files(kept, 0), False

        async def active() -> bool:
            try:
                info = await self.inspect(instance_id)
            except InstanceNotFound:
                return False
            return info.state not in (InstanceState.STOPPED, InstanceState.FAILED)

        async for line in output_lines(files, since=since, follow=follow, active=active):
            yield line

    def log_file(self, instance_id: str) -> Path:
        """The current output file of an instance (the local runtime's own; tests read it)."""
        return self._existing_dir(instance_id) / LOG_DIR / OUTPUT_LOG

    async def list_exited(self, service: str | None = None) -> builtins.list[InstanceInfo]:
        """Removed instances that had crashed and whose output is kept, newest removal first."""
        paths = await asyncio.to_thread(exited_dirs, self.exited_dir, service)
        infos = []
        for path in paths:
            try:
                infos.append(await asyncio.to_thread(exited_info, path))
            except (OSError, ValueError, TypeError):
                continue  # trimmed meanwhile
        return infos

    # -- starting ---------------------------------------------------------------------------

    def _prepare_dir(self, instance_dir: Path) -> None:
        """Create the instance dir (0700), or reuse the dir of a stopped instance of that id."""
        self.instances_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.instances_dir, 0o700)
        if (instance_dir / SPEC_FILE).exists():
            info = self._read_info(instance_dir)
            app = self._recorded_app(instance_dir)
            if info.state not in (InstanceState.STOPPED, InstanceState.FAILED) or (
                app is not None and procinfo.group_alive(app)
            ):
                raise RuntimeBackendError(
                    f"instance {instance_dir.name!r} already exists and is {info.state}: "
                    "stop it first or choose another instance id"
                )
            for name in (STATUS_FILE, SUPERVISOR_FILE, STOP_REQUEST_FILE):
                (instance_dir / name).unlink(missing_ok=True)
        instance_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(instance_dir, 0o700)

    def _recorded_ports(self) -> set[int]:
        ports: set[int] = set()
        if not self.instances_dir.is_dir():
            return ports
        for instance_dir in self.instances_dir.iterdir():
            try:
                ports.add(SpecRecord.load(instance_dir).port)
            except (OSError, ValueError, TypeError):
                continue  # a half-written or foreign dir holds no port
        return ports

    def _launch_supervisor(
        self, instance_dir: Path, app_env: Mapping[str, str], *, adopt: bool = False
    ) -> subprocess.Popen[bytes]:
        """Start the supervisor detached; the app's env goes through its process environment."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(APP_ENV_PREFIX)}
        env.update({APP_ENV_PREFIX + name: value for name, value in app_env.items()})
        # The supervisor must import zerodown from wherever this process did.
        source_root = str(Path(zerodown.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (source_root, env.get("PYTHONPATH")) if p)
        log_fd = os.open(
            instance_dir / SUPERVISOR_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        try:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "zerodown.runtimes.local.supervisor",
                    *(["--adopt"] if adopt else []),
                    str(instance_dir),
                ],
                cwd=instance_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # out of the control plane's group: its signals miss us
            )
        except OSError as exc:
            raise RuntimeBackendError(f"cannot launch the supervisor: {exc}") from exc
        finally:
            os.close(log_fd)

    async def _wait_until_spawned(self, instance_dir: Path, proc: subprocess.Popen[bytes]) -> None:
        """Wait until status.json shows the app was spawned; fail if the supervisor dies first."""
        deadline = time.monotonic() + self.spawn_timeout
        while True:
            status = StatusRecord.load(instance_dir)
            if status is not None and status.state == InstanceState.FAILED:
                await asyncio.to_thread(_wait_quietly, proc, _KILL_WAIT)  # it exits right after
                tail = supervisor_log_tail(instance_dir)
                raise RuntimeBackendError(f"instance {instance_dir.name!r} could not start: {tail}")
            if status is not None and (
                status.app_pid is not None or status.state == InstanceState.STOPPED
            ):
                return
            if proc.poll() is not None:
                raise RuntimeBackendError(
                    f"the supervisor of {instance_dir.name!r} exited with {proc.returncode} "
                    f"before starting the app: {supervisor_log_tail(instance_dir)}"
                )
            if time.monotonic() >= deadline:
                proc.terminate()  # a supervisor stops whatever it spawned before exiting
                raise RuntimeBackendError(
                    f"the supervisor of {instance_dir.name!r} did not start the app within "
                    f"{self.spawn_timeout}s: {supervisor_log_tail(instance_dir)}"
                )
            await asyncio.sleep(_POLL_INTERVAL)

    # -- adopting ---------------------------------------------------------------------------

    def _instance_dirs(self) -> builtins.list[Path]:
        if not self.instances_dir.is_dir():
            return []
        return sorted(d for d in self.instances_dir.iterdir() if (d / SPEC_FILE).exists())

    def _launch_adopter(self, instance_dir: Path) -> subprocess.Popen[bytes] | None:
        """Launch `supervisor --adopt` if the app runs unsupervised: the adopter, or None."""
        return launch_adopter_if_orphaned(
            instance_dir, lambda: self._launch_supervisor(instance_dir, {}, adopt=True)
        )

    # -- stopping ---------------------------------------------------------------------------

    async def _stop_through_supervisor(
        self, instance_dir: Path, supervisor: ProcessIdentity, grace: float
    ) -> None:
        """Ask the supervisor to stop the app within `grace`; take over if it does not."""
        await asyncio.to_thread(
            write_json_atomic, instance_dir / STOP_REQUEST_FILE, {"timeout": grace}
        )
        procinfo.signal_process(supervisor, signal.SIGTERM)
        # The supervisor escalates to SIGKILL itself after `grace`; the margin covers that.
        if await wait_until(
            lambda: not procinfo.is_alive(supervisor), grace + _KILL_WAIT, _POLL_INTERVAL
        ):
            await _stop_group(self._recorded_app(instance_dir), 0.0)  # leftovers, if any
            return
        await _stop_group(self._recorded_app(instance_dir), 0.0)
        procinfo.signal_process(supervisor, signal.SIGKILL)
        await wait_until(lambda: not procinfo.is_alive(supervisor), _KILL_WAIT)

    def _recorded_app(self, instance_dir: Path) -> ProcessIdentity | None:
        status = StatusRecord.load(instance_dir)
        return status.app if status else None

    # -- reading ----------------------------------------------------------------------------

    def _read_all(self, service: str | None) -> builtins.list[InstanceInfo]:
        infos: builtins.list[InstanceInfo] = []
        if not self.instances_dir.is_dir():
            return infos
        for instance_dir in sorted(self.instances_dir.iterdir()):
            try:
                info = self._read_info(instance_dir)
            except InstanceNotFound:
                continue  # a dir being created or removed right now
            if service is None or info.service == service:
                infos.append(info)
        return infos

    def _read_info(self, instance_dir: Path) -> InstanceInfo:
        """Combine the recorded files with what /proc says is alive right now."""
        try:
            record = SpecRecord.load(instance_dir)
        except FileNotFoundError as exc:
            raise InstanceNotFound(f"no instance {instance_dir.name!r}") from exc
        status = StatusRecord.load(instance_dir)
        supervisor = read_supervisor(instance_dir)
        supervised = supervisor is not None and procinfo.is_alive(supervisor)
        app = status.app if status else None
        app_alive = app is not None and procinfo.is_alive(app)
        state = _derive_state(instance_dir, status, supervised, app_alive)
        labels = {**record.labels, "supervised": "true" if supervised else "false"}
        return InstanceInfo(
            instance_id=record.instance_id,
            service=record.service,
            revision=record.revision,
            host=record.host,
            port=record.port,
            state=state,
            pid=app.pid if app is not None and app_alive else None,
            started_at=procinfo.started_at(app) if app is not None and app_alive else None,
            restarts=status.restarts if status else 0,
            exit_code=status.exit_code if status else None,
            labels=labels,
        )

    # -- paths --------------------------------------------------------------------------------

    def _dir_for(self, instance_id: str) -> Path:
        if not _INSTANCE_ID.fullmatch(instance_id):
            raise ConfigError(
                "must be 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit",
                field="instance_id",
            )
        return self.instances_dir / instance_id

    def _existing_dir(self, instance_id: str) -> Path:
        if not _INSTANCE_ID.fullmatch(instance_id):
            raise InstanceNotFound(f"no instance {instance_id!r}")
        instance_dir = self.instances_dir / instance_id
        if not (instance_dir / SPEC_FILE).exists():
            raise InstanceNotFound(f"no instance {instance_id!r} in {self.instances_dir}")
        return instance_dir


def _derive_state(
    instance_dir: Path, status: StatusRecord | None, supervised: bool, app_alive: bool
) -> InstanceState:
    """The state to report, from the recorded one and what is alive right now."""
    recorded = InstanceState(status.state) if status else InstanceState.STARTING
    if app_alive:
        # An app whose supervisor died still serves: RUNNING, labelled supervised=false.
        return (
            InstanceState.STOPPING if recorded == InstanceState.STOPPING else InstanceState.RUNNING
        )
    if supervised:
        if recorded != InstanceState.RUNNING:
            return recorded  # including STOPPED/FAILED just before the supervisor exits
        return InstanceState.RESTARTING  # the app just exited; the supervisor is on it
    if status is None:
        launching = _children.get(instance_dir)
        if launching is not None and launching.poll() is None:
            return InstanceState.STARTING  # the supervisor has not written its files yet
        return InstanceState.FAILED
    if recorded in (InstanceState.STOPPED, InstanceState.FAILED):
        return recorded
    # Neither supervisor nor app runs and nobody recorded why: killed, or the machine rebooted.
    return InstanceState.FAILED


def _reap_children() -> None:
    """Collect supervisors of ours that have exited, so none lingers as a zombie."""
    for instance_dir, proc in list(_children.items()):
        if proc.poll() is not None:
            del _children[instance_dir]
    reap_adopters()


def _record_stopped(instance_dir: Path, port: int) -> None:
    """Record the stop unless the supervisor did (it was gone, or killed for not stopping)."""
    status = StatusRecord.load(instance_dir)
    if status is None or status.state != InstanceState.STOPPED:
        StatusRecord(
            state=InstanceState.STOPPED,
            port=port,
            app_pid=status.app_pid if status else None,
            restarts=status.restarts if status else 0,
            exit_code=status.exit_code if status else None,
            crashes=status.crashes if status else 0,
        ).save(instance_dir)


async def _stop_group(app: ProcessIdentity | None, grace: float) -> None:
    """SIGTERM the app's process group, wait `grace` for all of it, then SIGKILL what is left."""
    if app is None or not procinfo.group_alive(app):
        return
    if grace > 0:
        procinfo.signal_group(app, signal.SIGTERM)
        if await wait_until(lambda: not procinfo.group_alive(app), grace):
            return
    procinfo.signal_group(app, signal.SIGKILL)
    if not await wait_until(lambda: not procinfo.group_alive(app), _KILL_WAIT):
        raise RuntimeBackendError(f"process group {app.pid} survived SIGKILL for {_KILL_WAIT}s")


def _wait_quietly(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait (blocking) for our child `proc` to exit, giving up silently after `timeout`."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
