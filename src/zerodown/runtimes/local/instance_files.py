"""The on-disk layout of an instance directory, shared by the supervisor and `LocalRuntime`.

`<state_dir>/instances/<instance_id>/` (0700): `spec.json` (env variable names, never values),
`supervisor.json`, `status.json`, `supervisor.lock` (see `adoption`), `supervisor.log` and
`logs/output.log[.N]`. Every JSON file is written atomically (temporary file + rename).

When an instance that crashed is removed, the end of its output stays readable in
`<state_dir>/exited/<instance_id>/` (`spec.json`, `status.json`, `logs/output.log`; see `exited`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from zerodown.runtimes.base import InstanceSpec, ReleaseDirectory
from zerodown.runtimes.local.logfile import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES
from zerodown.runtimes.local.procinfo import ProcessIdentity

SPEC_FILE = "spec.json"
SUPERVISOR_FILE = "supervisor.json"
STATUS_FILE = "status.json"
SUPERVISOR_LOG = "supervisor.log"
# {"timeout": seconds}, written by `LocalRuntime.stop()` just before SIGTERM: its timeout wins.
STOP_REQUEST_FILE = "stop-request.json"
LOG_DIR = "logs"
OUTPUT_LOG = "output.log"
_LOG_TAIL_BYTES = 2000


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
        cls,
        spec: InstanceSpec,
        release: ReleaseDirectory,
        host: str,
        port: int,
        *,
        log_max_bytes: int,
        log_backups: int,
    ) -> SpecRecord:
        """Record `spec` (running `release`) with its address, dropping every env value."""
        return cls(
            service=spec.service,
            revision=spec.revision,
            instance_id=spec.instance_id,
            command=release.command,
            workdir=release.workdir,
            env_names=sorted(spec.env),
            port_env=spec.port_env,
            host=host,
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
    exit_code: int | None = None  # None after an adopted app exited: not our child, code unknown
    crashes: int = 0  # exits nobody asked for (restarted or not): their output is worth keeping
    updated_at: float = 0.0
    # The app's own read end of its output pipe (fd number in the app, pipe inode): see outputpipe.
    output_fd: int | None = None
    output_inode: int | None = None

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


def supervisor_log_tail(instance_dir: Path) -> str:
    """The end of supervisor.log, for error messages a user can act on."""
    try:
        with open(instance_dir / SUPERVISOR_LOG, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - _LOG_TAIL_BYTES))
            tail = handle.read().decode("utf-8", "replace").strip()
    except OSError:
        return "(no supervisor.log)"
    return tail or "(supervisor.log is empty)"
