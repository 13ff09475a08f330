"""Time as a seam: code that waits or measures takes a `Clock`, so tests can drive time by hand."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Monotonic time for measuring, wall time for records, and a sleep that honours both."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for intervals and deadlines)."""
        ...

    def time(self) -> float:
        """Unix time in seconds (for timestamps that people and the history store read)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's monotonic time."""
        ...


class SystemClock:
    """The real clock: `time.monotonic`, `time.time` and `asyncio.sleep`."""

    def monotonic(self) -> float:
        """Seconds from `time.monotonic()`."""
        return time.monotonic()

    def time(self) -> float:
        """Seconds from `time.time()`."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Sleep on the running event loop."""
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that moves only when a test calls `advance()`; sleepers wake in time order.

    `advance()` steps from one wake time to the next and lets the woken tasks run (a few event
    loop turns) before the next step, so a loop that sleeps repeatedly sees every step it would
    see in real time.
    """

    def __init__(
        self, *, start: float = 1000.0, unix_start: float = 1_700_000_000.0, settle_turns: int = 50
    ) -> None:
        self._now = start
        self._unix_offset = unix_start - start
        self._settle_turns = settle_turns
        # Heap of (wake time, tie-breaker, future); the counter keeps equal wake times FIFO.
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        """The fake monotonic time."""
        return self._now

    def time(self) -> float:
        """The fake unix time, moving in step with `monotonic()`."""
        return self._now + self._unix_offset

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock is advanced `seconds` past now (sleeping <= 0 just yields)."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting now (cancelled ones excluded)."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    def next_wake(self) -> float | None:
        """The earliest wake time of a waiting sleep, or None when nothing sleeps."""
        self._drop_finished()
        return self._sleepers[0][0] if self._sleepers else None

    async def settle(self) -> None:
        """Let runnable tasks run until they block again (a fixed number of loop turns)."""
        for _ in range(self._settle_turns):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, waking sleepers in order and letting them run."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        target = self._now + seconds
        await self.settle()
        while (wake := self.next_wake()) is not None and wake <= target:
            self._now = max(self._now, wake)
            while self._sleepers and self._sleepers[0][0] <= self._now:
                _, _, future = heapq.heappop(self._sleepers)
                if not future.done():
                    future.set_result(None)
            await self.settle()
        self._now = target
        await self.settle()

    async def advance_to_next(self) -> float:
        """Advance exactly to the next wake time and return it (raises when nothing sleeps)."""
        await self.settle()
        wake = self.next_wake()
        if wake is None:
            raise RuntimeError("nothing is sleeping on this clock")
        await self.advance(max(0.0, wake - self._now))
        return wake

    def _drop_finished(self) -> None:
        # Cancelled sleeps stay in the heap until they reach the top; drop them lazily here.
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
