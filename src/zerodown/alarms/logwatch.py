"""`InstanceLogWatch`: log metric filter counts over what instances write while an alarm watches.

Logs are read through the runtime (`Runtime.logs(follow=True)`, secrets masked), never from
files: an instance is followed from the moment it is first seen, as `LogTail` counts a file
from its end, so output from before the deployment never counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from zerodown.errors import ZerodownError
from zerodown.metrics.logfilters import LogMetricFilter, count_lines
from zerodown.runtimes.base import InstanceInfo, Runtime

PENDING_LIMIT = 100_000  # lines kept between two polls; a flood beyond it counts as this many


class InstanceLogWatch:
    """Follows each instance's output and counts filter matches since the previous `poll`."""

    def __init__(self, runtime: Runtime, filters: Sequence[LogMetricFilter]) -> None:
        self.runtime = runtime
        self.filters = list(filters)
        self._followers: dict[str, asyncio.Task[None]] = {}
        self._pending: list[str] = []

    def poll(self, instances: Sequence[InstanceInfo]) -> dict[str, int]:
        """Matches per filter in the lines written since the last poll; starts following every
        instance not seen before."""
        for info in instances:
            if info.instance_id not in self._followers:
                self._followers[info.instance_id] = asyncio.create_task(
                    self._follow(info.instance_id, time.time()),
                    name=f"log watch {info.instance_id}",
                )
        lines, self._pending = self._pending, []
        return count_lines(lines, self.filters)

    async def close(self) -> None:
        """Stop following (every follower is cancelled and awaited)."""
        followers = list(self._followers.values())
        for task in followers:
            task.cancel()
        for task in followers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._followers.clear()

    async def _follow(self, instance_id: str, since: float) -> None:
        try:
            async for line in self.runtime.logs(instance_id, since=since, follow=True):
                if len(self._pending) < PENDING_LIMIT:
                    self._pending.append(line)
        except ZerodownError:
            return  # removed: nothing more to count
