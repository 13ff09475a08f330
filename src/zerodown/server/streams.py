"""Live deployment progress for the dashboard: Server-Sent Events read from the history.

The history is the one source every process writes (a CLI deploy in direct mode, `zerodown
serve`, the API), so a stream reads new events from the store. Deployments this process runs
wake the streams at once through `EventBus`; others are picked up by a short poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from zerodown.domain.events import DeploymentEvent, EventKind
from zerodown.server.views import deployment_view, event_view
from zerodown.store.base import HistoryStore

POLL_SECONDS = 0.5  # how soon a stream notices events written by another process
KEEPALIVE_SECONDS = 15.0  # a comment line keeps proxies from closing an idle stream
MAX_STREAM_SECONDS = 6 * 3600.0  # a stream ends after this; EventSource reconnects by itself
FINAL_EVENT_GRACE = 3.0  # after the record turns terminal, wait this long for its last event


class EventBus:
    """Wakes every waiting stream when a deployment of this process records an event."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def notify(self) -> None:
        """Something was recorded: wake the waiters."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        """Until the next notification, or `timeout` seconds."""
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await changed.wait()


class BusObserver:
    """A `DeploymentObserver` that tells the bus about every event."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    async def on_event(self, event: DeploymentEvent) -> None:
        """Wake the streams."""
        self.bus.notify()


def sse(event: str, data: Any, *, event_id: int | None = None) -> str:
    """One Server-Sent Events message."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


async def deployment_stream(
    store: HistoryStore,
    deployment_id: str,
    *,
    after: int,
    bus: EventBus,
    gone: Callable[[], Awaitable[bool]],
    stopping: asyncio.Event,
) -> AsyncIterator[str]:
    """Every event of the deployment after sequence number `after`, as they are recorded, then
    an `end` message with the final record. Ends early when the client leaves or serve stops."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    quiet_since = started
    terminal_at: float | None = None
    seq = after
    ended = False  # the terminal STATE event was sent
    yield "retry: 2000\n\n"
    while loop.time() - started < MAX_STREAM_SECONDS:
        for number, event in await store.events(deployment_id, after=seq):
            seq = number
            quiet_since = loop.time()
            ended = ended or _is_final(event)
            yield sse("deployment_event", event_view(number, event), event_id=number)
        record = await store.get_deployment(deployment_id)
        if record.state.terminal:
            terminal_at = terminal_at or loop.time()
            # The record turns terminal just before its last STATE event is written.
            if ended or loop.time() - terminal_at > FINAL_EVENT_GRACE:
                yield sse("end", deployment_view(record))
                return
        if stopping.is_set() or await gone():
            return
        if loop.time() - quiet_since > KEEPALIVE_SECONDS:
            quiet_since = loop.time()
            yield ": keepalive\n\n"
        await bus.wait(POLL_SECONDS)


def _is_final(event: DeploymentEvent) -> bool:
    if event.kind is not EventKind.STATE:
        return False
    return str(event.data.get("to")) in ("succeeded", "rolled_back", "failed")
