"""An instance's output files read as lines: what was written since a time, then what follows.

The supervisor writes `output.log` (already masked) and rotates it to `output.log.1..N`. Lines
carry no stamp of their own, so `since` keeps whole files last written at or after it; a
follower polls the current file's size and reads across one rotation (the rest of the old file
is then in `output.log.1`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

FOLLOW_INTERVAL = 0.2  # how often a follower looks for new output
_READ_LIMIT = 4 * 1024 * 1024  # bytes read per file per step: a flood is read the next time


async def output_lines(
    files: list[Path],
    *,
    since: float | None,
    follow: bool,
    active: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    """Lines of `files` (newest first, as `exited.output_files` lists them), oldest first.

    With `follow`, keeps reading the newest file while `active()` says the instance may still
    write (checked after each quiet poll).
    """
    current = files[0]
    position = await asyncio.to_thread(_size, current)
    for path in reversed(files[1:]):
        for line in await asyncio.to_thread(_whole_file, path, since):
            yield line
    head = await asyncio.to_thread(_read_range, current, 0, position, since)
    for line in head.decode(errors="replace").splitlines():
        yield line
    partial = b""
    while follow:
        chunk, position = await asyncio.to_thread(_read_new, current, files, position)
        if not chunk:
            if not await active():
                break
            await asyncio.sleep(FOLLOW_INTERVAL)
            continue
        data = partial + chunk
        complete = data.rfind(b"\n") + 1  # a line being written is yielded once it is whole
        partial = data[complete:]
        for line in data[:complete].decode(errors="replace").splitlines():
            yield line
    if partial:
        yield partial.decode(errors="replace")


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _whole_file(path: Path, since: float | None) -> list[str]:
    try:
        if since is not None and path.stat().st_mtime < since:
            return []
        return path.read_bytes()[-_READ_LIMIT:].decode(errors="replace").splitlines()
    except FileNotFoundError:
        return []


def _read_range(path: Path, start: int, end: int, since: float | None) -> bytes:
    try:
        if since is not None and path.stat().st_mtime < since:
            return b""
        first = max(start, end - _READ_LIMIT)
        with path.open("rb") as handle:
            handle.seek(first)
            return handle.read(end - first)
    except FileNotFoundError:
        return b""


def _read_new(current: Path, files: list[Path], position: int) -> tuple[bytes, int]:
    """What was appended since `position`, and the position after it (0 after a rotation)."""
    size = _size(current)
    if size >= position:
        end = min(size, position + _READ_LIMIT)
        return _read_range(current, position, end, None), end
    rotated = files[1] if len(files) > 1 else None  # the old file, renamed under us
    rest = b""
    if rotated is not None and _size(rotated) > position:
        rest = _read_range(rotated, position, _size(rotated), None)
    return rest, 0
