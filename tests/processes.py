"""Waiting for a process to end, by event (a pidfd), not by polling /proc."""

from __future__ import annotations

import asyncio
import os


async def wait_exited(pid: int, timeout: float = 5.0) -> bool:
    """Whether `pid` has terminated (a zombie counts as terminated) within `timeout` seconds.

    A SIGKILL is delivered asynchronously: the process is gone a moment after `kill` returns, once
    the kernel schedules it. A pidfd becomes readable at exactly that moment.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    loop = asyncio.get_running_loop()
    exited = asyncio.Event()
    loop.add_reader(pidfd, exited.set)
    try:
        async with asyncio.timeout(timeout):
            await exited.wait()
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
