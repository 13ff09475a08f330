"""Run one shell command the way builds and hooks need it, and leave nothing running behind.

The command runs under `/bin/sh -c` in a process group of its own, so the whole tree it starts
(`make` and its compilers, `sleep 100 &`) can be signalled at once: on timeout, and also after a
normal exit, when background children it left would otherwise outlive the hook or build.
stdout and stderr are merged and handed over line by line as they arrive (live progress).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from zerodown.runtimes.local.procinfo import (
    ProcessIdentity,
    group_alive,
    read_stat,
    signal_group,
)

KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL of the group
MAX_LINE = 16 * 1024  # a longer line arrives in pieces: one endless line must not eat memory
_READ_CHUNK = 64 * 1024
_POLL = 0.02  # the kernel gives no event for "group empty": poll /proc at this interval


@dataclass(frozen=True)
class ShellResult:
    """How a shell command ended: exit code (negative: killed by that signal), time, last lines."""

    exit_code: int
    seconds: float
    output_tail: list[str]
    timed_out: bool

    @property
    def ok(self) -> bool:
        """True when the command exited 0 within its timeout."""
        return self.exit_code == 0 and not self.timed_out


async def run_shell(
    command: str,
    *,
    cwd: Path,
    env: Mapping[str, str] | None,
    timeout: float,
    on_line: Callable[[str], None] | None = None,
    tail_lines: int = 20,
    kill_grace: float = KILL_GRACE,
) -> ShellResult:
    """Run `command` with `/bin/sh -c` in `cwd`; `env=None` inherits this process's environment.

    Each output line (without its newline) goes to `on_line` as it arrives; `on_line` must not
    block or raise. On timeout the process group gets SIGTERM, then SIGKILL after `kill_grace`.
    Raises OSError when the shell cannot be started (e.g. `cwd` does not exist).
    """
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=tail_lines)

    def deliver(line: str) -> None:
        tail.append(line)
        if on_line is not None:
            on_line(line)

    # Output goes through a pipe of our own, not asyncio's PIPE: `Process.wait()` would otherwise
    # also wait for every holder of the pipe (a `sleep 100 &`) to close it, not for the shell.
    read_fd, write_fd = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            command,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            start_new_session=True,  # its own group: one signal reaches the whole tree it starts
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    leader = _leader_identity(proc.pid)
    pipe = os.fdopen(read_fd, "rb", buffering=0)
    transport: asyncio.BaseTransport | None = None
    reader: asyncio.Task[None] | None = None
    timed_out = False
    try:
        stream = asyncio.StreamReader()
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(stream), pipe
        )
        reader = asyncio.create_task(_read_lines(stream, deliver))
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            timed_out = True
        await _end_group(leader, proc, kill_grace)
        await _finish_reading(reader, kill_grace)
    except BaseException:
        # Cancelled (deployment aborted) or failed: nothing may survive us, and there may be no
        # time left to be polite.
        signal_group(leader, signal.SIGKILL)
        if reader is not None:
            reader.cancel()
        raise
    finally:
        if transport is not None:
            transport.close()  # closes `pipe` too
        else:
            pipe.close()
    exit_code = proc.returncode if proc.returncode is not None else -signal.SIGKILL
    return ShellResult(
        exit_code=exit_code,
        seconds=time.monotonic() - started,
        output_tail=list(tail),
        timed_out=timed_out,
    )


def _leader_identity(pid: int) -> ProcessIdentity:
    # Read even a zombie's start time: a command as short as `true` may be done already. If the
    # pid is gone altogether, -1 matches no process, so a reused pid is never signalled.
    stat = read_stat(pid)
    return ProcessIdentity(pid=pid, start_ticks=stat.start_ticks if stat else -1)


async def _end_group(
    leader: ProcessIdentity, proc: asyncio.subprocess.Process, grace: float
) -> None:
    """SIGTERM whatever of the group still runs, SIGKILL it after `grace`, reap the leader."""
    if group_alive(leader) and signal_group(leader, signal.SIGTERM):
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and group_alive(leader):  # noqa: ASYNC110 (no event)
            await asyncio.sleep(_POLL)
        if group_alive(leader):
            signal_group(leader, signal.SIGKILL)
    # Only a process stuck in the kernel (state D) outlives SIGKILL; do not hang on it.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), grace)


async def _finish_reading(reader: asyncio.Task[None], grace: float) -> None:
    """Wait for the end of output; a process that escaped the group may hold the pipe open."""
    done, _ = await asyncio.wait({reader}, timeout=grace)
    if not done:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        return
    reader.result()  # re-raise what `on_line` raised


async def _read_lines(stream: asyncio.StreamReader, deliver: Callable[[str], None]) -> None:
    """Split the stream into lines (any of \\n, \\r\\n) and deliver each as soon as it is whole."""
    pending = b""
    while True:
        chunk = await stream.read(_READ_CHUNK)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            _deliver_capped(raw.removesuffix(b"\r"), deliver)
        while len(pending) > MAX_LINE:
            deliver(_decode(pending[:MAX_LINE]))
            pending = pending[MAX_LINE:]
    if pending:
        _deliver_capped(pending.removesuffix(b"\r"), deliver)


def _deliver_capped(raw: bytes, deliver: Callable[[str], None]) -> None:
    for start in range(0, max(len(raw), 1), MAX_LINE):
        deliver(_decode(raw[start : start + MAX_LINE]))


def _decode(raw: bytes) -> str:
    # A multi-byte character cut at a piece boundary becomes U+FFFD: output is for people.
    return raw.decode("utf-8", "replace")
