"""The app's output pipe, built so that it never loses its last reader while the app lives.

The supervisor pumps the app's stdout+stderr from an anonymous pipe into the rotating log. If
the supervisor is SIGKILLed (OOM killer, a user) and it held the only read end, the app's next
write fails with EPIPE/SIGPIPE: a Node app dies, a Python `print` raises inside a request. So the
app inherits a read end of its own output pipe too (`pass_fds`; its number and the pipe's inode
are recorded in `status.json`). It never reads it; holding it is enough for writes to succeed.
The buffer is raised to `PIPE_SIZE` (F_SETPIPE_SZ, quietly keeping the default when refused), so
output written while no supervisor runs waits in the pipe, and an adopting supervisor reopens the
very same pipe through `/proc/<app_pid>/fd/<n>` and logs it. Only once the buffer is full does
the app block on writing, until a supervisor reads again: a stall adoption cures, not a crash.

Alternatives weighed: a named FIFO in the instance dir is easier to reopen but has the same
"no reader left" problem (someone must still hold a read end); a separate pipe-holder process
per instance adds a process to start, stop and account for; writing straight to the log file
gives up masking and rotation. The inherited read end costs one fd in the app and nothing else.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat

# 1 MiB is Linux's default /proc/sys/fs/pipe-max-size for unprivileged users. The size is charged
# to the user's pipe quota (pipe-user-pages-soft, 64 MiB by default: some 60 instances); past it,
# the kernel refuses the raise for unprivileged users and the pipe keeps its default 64 KiB.
PIPE_SIZE = 1024 * 1024


def create_pipe() -> tuple[int, int]:
    """A new (read_fd, write_fd) pair, both close-on-exec, with its buffer raised if allowed."""
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(OSError, AttributeError):  # refused by a quota, or not Linux
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    return read_fd, write_fd


def pipe_inode(fd: int) -> int:
    """The inode that names the pipe behind `fd` (as shown in /proc/<pid>/fd: `pipe:[inode]`)."""
    return os.fstat(fd).st_ino


def reopen_pipe(pid: int, fd: int, inode: int) -> int:
    """Open a new non-blocking read end of the pipe process `pid` holds as `fd`.

    Checks that the fd still names pipe `inode`, so a reused pid or fd number is never read.
    Raises OSError when the process is gone, not ours to inspect, or holds something else.
    """
    link = f"/proc/{pid}/fd/{fd}"
    if os.readlink(link) != f"pipe:[{inode}]":
        raise OSError(f"fd {fd} of process {pid} is not the app's output pipe any more")
    # O_NONBLOCK: opening a pipe for reading never waits for a writer that way.
    new_fd = os.open(link, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    info = os.fstat(new_fd)
    if not stat.S_ISFIFO(info.st_mode) or info.st_ino != inode:
        os.close(new_fd)
        raise OSError(f"fd {fd} of process {pid} changed while it was being opened")
    return new_fd
