"""The clock seam: the real clock measures and sleeps, the fake one moves only when told to."""

from __future__ import annotations

import asyncio

import pytest

from zerodown.clock import Clock, FakeClock, SystemClock


async def test_system_clock_is_a_clock_and_sleeps_about_as_long_as_asked() -> None:
    clock = SystemClock()
    assert isinstance(clock, Clock)
    before = clock.monotonic()
    await clock.sleep(0.05)
    elapsed = clock.monotonic() - before
    assert 0.04 <= elapsed < 1.0
    assert clock.time() > 1_600_000_000


async def test_fake_clock_sleep_resolves_only_once_advanced_past_its_wake_time() -> None:
    clock = FakeClock()
    assert isinstance(clock, Clock)
    sleeper = asyncio.create_task(clock.sleep(5))
    await clock.advance(4.9)
    assert not sleeper.done()
    assert clock.sleepers == 1
    await clock.advance(0.1)
    assert sleeper.done()
    assert clock.sleepers == 0


async def test_fake_clock_wakes_sleepers_in_time_order_at_their_own_wake_time() -> None:
    clock = FakeClock(start=0.0)
    woke: list[tuple[str, float]] = []

    async def nap(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.monotonic()))

    tasks = [asyncio.create_task(nap(n, s)) for n, s in (("c", 3.0), ("a", 1.0), ("b", 2.0))]
    await clock.advance(10)
    assert woke == [("a", 1.0), ("b", 2.0), ("c", 3.0)]
    assert clock.monotonic() == 10.0
    await asyncio.gather(*tasks)


async def test_fake_clock_lets_a_sleeping_loop_see_every_step_within_one_advance() -> None:
    clock = FakeClock(start=0.0)
    ticks: list[float] = []

    async def every_second() -> None:
        for _ in range(5):
            await clock.sleep(1)
            ticks.append(clock.monotonic())

    task = asyncio.create_task(every_second())
    await clock.advance(3.5)
    assert ticks == [1.0, 2.0, 3.0]
    await clock.advance(10)
    assert ticks == [1.0, 2.0, 3.0, 4.0, 5.0]
    await task


async def test_fake_clock_unix_time_moves_with_monotonic_time() -> None:
    clock = FakeClock(start=50.0, unix_start=1_700_000_000.0)
    assert clock.time() == 1_700_000_000.0
    await clock.advance(2.5)
    assert clock.monotonic() == 52.5
    assert clock.time() == 1_700_000_002.5


async def test_fake_clock_forgets_cancelled_sleeps_and_zero_sleeps_do_not_block() -> None:
    clock = FakeClock(start=0.0)
    sleeper = asyncio.create_task(clock.sleep(1))
    await clock.settle()
    sleeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeper
    assert clock.sleepers == 0
    assert clock.next_wake() is None
    await asyncio.wait_for(clock.sleep(0), timeout=1)
    await asyncio.wait_for(clock.sleep(-1), timeout=1)
    assert clock.monotonic() == 0.0


async def test_fake_clock_advance_to_next_jumps_exactly_to_the_earliest_wake() -> None:
    clock = FakeClock(start=0.0)
    first = asyncio.create_task(clock.sleep(0.7))
    second = asyncio.create_task(clock.sleep(2))
    assert await clock.advance_to_next() == 0.7
    assert first.done() and not second.done()
    assert clock.monotonic() == 0.7
    await clock.advance_to_next()
    assert second.done()
    with pytest.raises(RuntimeError):
        await clock.advance_to_next()


async def test_fake_clock_refuses_to_go_backwards() -> None:
    with pytest.raises(ValueError):
        await FakeClock().advance(-1)
