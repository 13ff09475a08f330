"""The router's files under `<state_dir>/router/` (mode 0700).

control.sock   the control socket (0600: authentication is the file's permissions)
state.json     the routing table, written atomically after every change
router.pid     pid and process start time of the router that owns the socket
events.jsonl   health transitions, drains, restarts: one JSON object per line, rotated
router.log     the daemon's stdout and stderr
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zerodown.errors import RouterError

log = logging.getLogger("zerodown.router")

STATE_DEBOUNCE = 0.25  # seconds: at most ~4 background writes of state.json per second
EVENTS_MAX_BYTES = 4 * 1024 * 1024
EVENTS_TAIL_BYTES = 512 * 1024  # how far back the `events` op reads
STATE_VERSION = 1


@dataclass(frozen=True)
class RouterPaths:
    """Where one router keeps its socket, state, pid, events and log."""

    root: Path

    @classmethod
    def under(cls, state_dir: Path) -> RouterPaths:
        """The router directory of a zerodown state directory."""
        return cls(Path(state_dir) / "router")

    @property
    def control(self) -> Path:
        """The control socket (mode 0600)."""
        return self.root / "control.sock"

    @property
    def state(self) -> Path:
        """The persisted routing table."""
        return self.root / "state.json"

    @property
    def pid(self) -> Path:
        """The pid and process start time of the router that owns the control socket."""
        return self.root / "router.pid"

    @property
    def events(self) -> Path:
        """Health transitions, drains and restarts, one JSON object per line."""
        return self.root / "events.jsonl"

    @property
    def log(self) -> Path:
        """The daemon's stdout and stderr."""
        return self.root / "router.log"

    def create(self) -> None:
        """Make the directory, private to this user (0700)."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)


def process_start_time(pid: int) -> int | None:
    """The start time (clock ticks since boot) of a live process, or None if it has gone.

    Together with the pid it names one process for good: a reused pid has another start time.
    A zombie counts as gone (a parent that never waits must not make the router look alive).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22 of the whole line


def write_pid_file(path: Path, pid: int) -> None:
    """Record `pid` and its start time, atomically."""
    record = json.dumps({"pid": pid, "start_time": process_start_time(pid)})
    tmp = path.with_name(f".{path.name}.{pid}")
    tmp.write_text(record + "\n")
    os.replace(tmp, path)


def read_pid_file(path: Path) -> int | None:
    """The pid in `path` if that very process is still alive, else None."""
    try:
        record = json.loads(path.read_text())
        pid = int(record["pid"])
        started = record.get("start_time")
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    now = process_start_time(pid)
    if now is None or (started is not None and now != started):
        return None
    return pid


class EventLog:
    """`events.jsonl`: one JSON object per line with `seq`, `ts` and `kind`; rotated at a few MB.

    During a restart two routers append to the same file, so the file is the only truth: each
    append takes a lock, reads the last `seq` and writes the next one.
    """

    def __init__(self, path: Path, max_bytes: int = EVENTS_MAX_BYTES) -> None:
        self._path = path
        self._rotated = path.with_name(path.name + ".1")
        self._lock_path = path.with_name(path.name + ".lock")
        self._max_bytes = max_bytes

    def record(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Append one event (never raises: losing an event must not stop the router)."""
        event: dict[str, Any] = {"seq": 0, "ts": round(time.time(), 3), "kind": kind, **fields}
        try:
            with self._locked():
                event["seq"] = self._last_seq() + 1
                with self._path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(event, separators=(",", ":")) + "\n")
                    size = f.tell()
                if size > self._max_bytes:
                    os.replace(self._path, self._rotated)
        except OSError as exc:
            log.warning("cannot write %s: %s", self._path, exc)
        return event

    def since(self, seq: int, limit: int = 500) -> list[dict[str, Any]]:
        """Events after `seq` (oldest first), at most `limit` of them, from the recent ones."""
        events = _read_tail(self._rotated, EVENTS_TAIL_BYTES) + _read_tail(
            self._path, EVENTS_TAIL_BYTES
        )
        return [e for e in events if e["seq"] > seq][:limit]

    def _last_seq(self) -> int:
        for path in (self._path, self._rotated):
            events = _read_tail(path, 4096)
            if events:
                return int(events[-1]["seq"])
        return 0

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the lock


def _read_tail(path: Path, size: int) -> list[dict[str, Any]]:
    """The whole events in the last `size` bytes of an events file (a cut first line is skipped)."""
    try:
        with path.open("rb") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(max(0, end - size))
            lines = f.read().splitlines()
            if end > size:
                lines = lines[1:]
    except FileNotFoundError:
        return []
    events = []
    for line in lines:
        with contextlib.suppress(ValueError, TypeError):
            event = json.loads(line)
            if isinstance(event, dict) and isinstance(event.get("seq"), int):
                events.append(event)
    return events


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so a crash leaves the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


class StateFile:
    """`state.json`, written in the background after changes and on demand before answering."""

    def __init__(self, path: Path, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._path = path
        self._snapshot = snapshot
        self._lock = asyncio.Lock()
        self._dirty = False
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Off while a successor owns the state (after handoff) and until startup has loaded it.
        self.enabled = False

    @staticmethod
    def load(path: Path) -> dict[str, Any] | None:
        """The saved state, or None if there is none; a corrupt file is set aside, not trusted."""
        try:
            data = json.loads(path.read_bytes())
            if not isinstance(data, dict) or not isinstance(data.get("table"), dict):
                raise ValueError("no table in it")
        except FileNotFoundError:
            return None
        except ValueError as exc:
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            os.replace(path, aside)
            log.error("%s is unreadable (%s); moved to %s, starting empty", path, exc, aside)
            return None
        return data

    def mark_dirty(self) -> None:
        """Note a change; it reaches the disk within STATE_DEBOUNCE seconds."""
        self._dirty = True
        if self.enabled and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(STATE_DEBOUNCE, self._flush_soon)

    def _flush_soon(self) -> None:
        self._timer = None
        task = asyncio.get_running_loop().create_task(self.flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        """Write the current table now if it changed since the last write."""
        async with self._lock:
            if not (self.enabled and self._dirty):
                return
            self._dirty = False
            data = {"version": STATE_VERSION, "saved_at": time.time(), "table": self._snapshot()}
            payload = json.dumps(data, indent=1).encode()
            try:
                await asyncio.to_thread(write_atomic, self._path, payload)
            except OSError as exc:
                self._dirty = True
                raise RouterError(f"cannot save the routing table to {self._path}: {exc}") from exc
