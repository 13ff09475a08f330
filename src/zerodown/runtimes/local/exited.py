"""The output of instances that exited: complete once pumped, and kept after their removal.

A deployment that fails rolls back and removes the instance that crashed, and with its dir went
the only copy of its traceback. So `LocalRuntime.remove()` first copies what explains a crash
(`spec.json`, `status.json` and the last `KEPT_BYTES` of output, already masked by the supervisor)
to `<state_dir>/exited/<instance_id>/`, keeping the newest `KEPT_PER_SERVICE` per service.
Instances stopped on purpose that never crashed leave nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from zerodown.runtimes.base import InstanceInfo, InstanceState
from zerodown.runtimes.local import procinfo
from zerodown.runtimes.local.instance_files import (
    LOG_DIR,
    OUTPUT_LOG,
    SPEC_FILE,
    STATUS_FILE,
    SpecRecord,
    StatusRecord,
    read_json,
    read_supervisor,
)
from zerodown.runtimes.local.logfile import DEFAULT_BACKUPS

EXITED_DIR = "exited"
KEPT_PER_SERVICE = 5  # crashed instances whose output each service keeps after their removal
KEPT_BYTES = 64 * 1024  # of each one's output: the end, where the traceback is
_EXITED_FILE = "exited.json"  # {"removed_at": unix time}: written last, marks a complete copy


def crashed(status: StatusRecord | None) -> bool:
    """Whether an instance ever exited without being asked to (or could not run at all)."""
    return status is not None and (status.crashes > 0 or status.state == InstanceState.FAILED)


def output_complete(instance_dir: Path) -> bool:
    """False while the app has exited but its supervisor may still be pumping its last output."""
    status = StatusRecord.load(instance_dir)
    if status is None or status.state != InstanceState.RUNNING:
        return True
    app = status.app
    if app is not None and procinfo.is_alive(app):
        return True
    supervisor = read_supervisor(instance_dir)
    return supervisor is None or not procinfo.is_alive(supervisor)


def output_files(log_dir: Path, backups: int = DEFAULT_BACKUPS) -> list[Path]:
    """An instance's output log and its rotated backups, newest first (existing or not)."""
    base = log_dir / OUTPUT_LOG
    return [base, *(base.with_name(f"{OUTPUT_LOG}.{i}") for i in range(1, backups + 1))]


def keep_output(instance_dir: Path, exited_root: Path) -> None:
    """Copy what explains the crash of `instance_dir` to `exited_root`, then trim the service's."""
    record = SpecRecord.load(instance_dir)
    exited_root.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = exited_root / instance_dir.name
    tmp = exited_root / f".{instance_dir.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / LOG_DIR).mkdir(mode=0o700, parents=True)
    for name in (SPEC_FILE, STATUS_FILE):
        if (instance_dir / name).exists():
            shutil.copyfile(instance_dir / name, tmp / name)
    tail = _last_bytes(output_files(instance_dir / LOG_DIR, record.log_backups), KEPT_BYTES)
    log_fd = os.open(tmp / LOG_DIR / OUTPUT_LOG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(log_fd, "wb") as handle:
        handle.write(tail)
    (tmp / _EXITED_FILE).write_text(json.dumps({"removed_at": time.time()}))
    shutil.rmtree(target, ignore_errors=True)  # an id used again: the newer crash wins
    os.replace(tmp, target)
    for stale in exited_dirs(exited_root, record.service)[KEPT_PER_SERVICE:]:
        shutil.rmtree(stale, ignore_errors=True)


def exited_dirs(exited_root: Path, service: str | None = None) -> list[Path]:
    """Kept copies (of one service, or all), newest removal first."""
    if not exited_root.is_dir():
        return []
    found: list[tuple[float, Path]] = []
    for path in exited_root.iterdir():
        marker = read_json(path / _EXITED_FILE) if not path.name.startswith(".") else None
        if marker is None:
            continue  # being written, or not ours
        try:
            record = SpecRecord.load(path)
        except (OSError, ValueError, TypeError):
            continue
        if service is None or record.service == service:
            found.append((float(marker.get("removed_at", 0.0)), path))
    return [path for _, path in sorted(found, key=lambda item: item[0], reverse=True)]


def exited_info(path: Path) -> InstanceInfo:
    """What is known of a removed instance from its kept copy (no process, no port in use)."""
    record = SpecRecord.load(path)
    status = StatusRecord.load(path)
    state = InstanceState.FAILED if status and status.state == "failed" else InstanceState.STOPPED
    return InstanceInfo(
        instance_id=record.instance_id,
        service=record.service,
        revision=record.revision,
        host=record.host,
        port=record.port,
        state=state,
        restarts=status.restarts if status else 0,
        exit_code=status.exit_code if status else None,
        labels={**record.labels, "exited": "true"},
    )


def _last_bytes(files: list[Path], limit: int) -> bytes:
    """The last `limit` bytes of the rotated log `files` (newest first), whole lines only."""
    data = b""
    for path in files:
        try:
            with path.open("rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                start = max(0, size - (limit - len(data)))
                handle.seek(start)
                data = handle.read() + data
        except FileNotFoundError:
            continue
        if len(data) >= limit:
            cut = data.find(b"\n") + 1 if start > 0 else 0
            return data[cut:]
    return data
