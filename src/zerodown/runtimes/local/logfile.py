"""A size-rotated log file: `output.log`, then `output.log.1` (newest) .. `.N` (oldest)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5
_TAIL_BLOCK = 64 * 1024
_TAIL_READ_LIMIT = 4 * 1024 * 1024  # the most `read_tail` reads, whatever it is asked for


class RotatingLogFile:
    """Appends bytes to `path`, rotating it when the next write would pass `max_bytes`.

    Writes are synchronous on purpose: the writer is the supervisor's only consumer of a local
    file, each write is one small append, and a thread hop per chunk would cost more than it saves.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backups: int = DEFAULT_BACKUPS,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if backups < 0:
            raise ValueError("backups must be zero or more")
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._file: BinaryIO | None = None
        self._size = 0

    def write(self, data: bytes) -> None:
        """Append `data`, rotating at line boundaries so no file passes `max_bytes`.

        Only a single line longer than a whole file is cut mid-line.
        """
        while data:
            room = max(0, self.max_bytes - self._current_size())
            if len(data) <= room:
                self._append(data)
                return
            cut = data.rfind(b"\n", 0, room) + 1  # whole lines that still fit
            if cut == 0 and self._size == 0:
                cut = room  # one line longer than a file: nothing better than cutting it
            if cut:
                self._append(data[:cut])
                data = data[cut:]
            self.rotate()

    def rotate(self) -> None:
        """Shift output.log.i to .i+1 (dropping the oldest) and start an empty output.log."""
        self.close()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for index in range(self.backups - 1, 0, -1):
                older = self._backup(index)
                if older.exists():
                    os.replace(older, self._backup(index + 1))
            if self.path.exists():
                os.replace(self.path, self._backup(1))
        self._size = 0

    def close(self) -> None:
        """Close the current file (a later write reopens it)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def files(self) -> list[Path]:
        """The existing log files, newest first."""
        candidates = [self.path, *(self._backup(i) for i in range(1, self.backups + 1))]
        return [p for p in candidates if p.exists()]

    def _backup(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def _current_size(self) -> int:
        self._open()  # learns the size of a file left by an earlier writer
        return self._size

    def _append(self, data: bytes) -> None:
        handle = self._open()
        handle.write(data)
        handle.flush()
        self._size += len(data)

    def _open(self) -> BinaryIO:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")  # noqa: SIM115 - kept open across writes
            self._size = self._file.tell()
        return self._file


def read_tail(files: list[Path], lines: int, max_bytes: int | None = None) -> list[str]:
    """The last `lines` lines of a rotated log (`files` newest first), at most `max_bytes` long.

    Reads backwards block by block, so a 10 MiB log costs no more than its last lines.
    """
    if lines <= 0:
        return []
    budget = _TAIL_READ_LIMIT if max_bytes is None else min(max_bytes, _TAIL_READ_LIMIT)
    data = b""
    complete = True  # whether `data` starts at the start of the oldest file read
    for path in files:
        try:
            with path.open("rb") as handle:
                position = handle.seek(0, os.SEEK_END)
                while position > 0 and data.count(b"\n") <= lines and len(data) <= budget:
                    step = min(_TAIL_BLOCK, position)
                    position -= step
                    handle.seek(position)
                    data = handle.read(step) + data
                complete = position == 0
        except FileNotFoundError:
            continue  # rotated away meanwhile
        if data.count(b"\n") > lines or len(data) > budget:
            break
    text = data.decode("utf-8", "replace").splitlines()
    if not complete and text:
        text = text[1:]  # the first line was cut where the read began
    tail = text[-lines:]
    while tail and max_bytes is not None and sum(len(t.encode()) + 1 for t in tail) > max_bytes:
        tail = tail[1:]
    return tail
