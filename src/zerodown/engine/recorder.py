"""`EventRecorder`: a deployment's events, in one order, to the history store and every observer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from zerodown.clock import Clock
from zerodown.domain.events import DeploymentEvent, DeploymentObserver, EventKind
from zerodown.engine.extensions import Masker, mask_value
from zerodown.store.base import HistoryStore

log = logging.getLogger(__name__)


class EventRecorder:
    """Sends a deployment's events to the store, then to every observer, strictly in order.

    One writer task drains a queue, so events emitted from parallel steps (and from synchronous
    callbacks through `emit_soon`) keep one order everywhere. A failing observer or store write
    is logged, never raised: history must not break a deployment that is moving traffic.
    """

    def __init__(
        self,
        deployment_id: str,
        store: HistoryStore,
        observers: Sequence[DeploymentObserver],
        clock: Clock,
        *,
        masker: Masker | None = None,
    ) -> None:
        self.deployment_id = deployment_id
        self.masker = masker
        self.store = store
        self.observers = list(observers)
        self.clock = clock
        self._queue: asyncio.Queue[tuple[DeploymentEvent, asyncio.Future[None]] | None] = (
            asyncio.Queue()
        )
        self._writer: asyncio.Task[None] | None = None

    def event(self, kind: EventKind, message: str, data: dict[str, Any] | None) -> DeploymentEvent:
        """A new event of this deployment, stamped now."""
        return DeploymentEvent(
            self.deployment_id, kind, message, dict(data or {}), self.clock.time()
        )

    def emit_soon(self, kind: EventKind, message: str, data: dict[str, Any] | None = None) -> None:
        """Queue an event without waiting for it to be written."""
        self._put(self.event(kind, message, data))

    async def emit(self, kind: EventKind, message: str, data: dict[str, Any] | None = None) -> None:
        """Queue an event and wait until the store and every observer have it."""
        await self.record(self.event(kind, message, data))

    async def record(self, event: DeploymentEvent) -> None:
        """Queue a ready-made event (the hook runner's) and wait until it is written."""
        # Shielded: a cancelled step must not lose the event it was recording.
        await asyncio.shield(self._put(event))

    def _put(self, event: DeploymentEvent) -> asyncio.Future[None]:
        if self.masker is not None:  # secrets never reach the history or an observer
            event = replace(
                event,
                message=self.masker.mask(event.message),
                data=mask_value(self.masker, event.data),
            )
        loop = asyncio.get_running_loop()
        if self._writer is None:
            self._writer = loop.create_task(self._write(), name=f"events {self.deployment_id[:8]}")
        done: asyncio.Future[None] = loop.create_future()
        self._queue.put_nowait((event, done))
        return done

    async def close(self) -> None:
        """Write what is queued, then stop the writer."""
        if self._writer is None:
            return
        self._queue.put_nowait(None)
        await asyncio.shield(self._writer)

    async def _write(self) -> None:
        while (item := await self._queue.get()) is not None:
            event, done = item
            try:
                await self.store.record_event(event)
            except Exception:
                log.exception("could not record event %s of %s", event.kind, event.deployment_id)
            for observer in self.observers:
                try:
                    await observer.on_event(event)
                except Exception:
                    log.exception("observer %r failed on %s", observer, event.kind)
            if not done.done():
                done.set_result(None)


class NullSink:
    """An event sink for looking at a fleet outside any deployment."""

    async def emit(self, kind: EventKind, message: str, data: dict[str, Any] | None = None) -> None:
        return None

    def emit_soon(self, kind: EventKind, message: str, data: dict[str, Any] | None = None) -> None:
        return None
