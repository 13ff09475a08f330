"""`NotificationDispatcher`: routes notifications to channels and delivers them in the background.

`dispatch()` returns at once: each matching channel gets a background task that tries up to
`1 + retries` times, each attempt bounded by `timeout`, waiting `backoff * 2**n` (with jitter, so
many control planes do not retry in step) between attempts. Every attempt is a row in the delivery
log. A channel that is down costs the caller nothing; `flush()` waits for what is in flight,
bounded, so a CLI process can let its last message leave before it exits.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from zerodown.clock import Clock, SystemClock
from zerodown.config.notifications import NotificationsConfig
from zerodown.engine.extensions import Masker
from zerodown.errors import NotificationFailed
from zerodown.notifiers.base import (
    DeliveryAttempt,
    DeliveryLog,
    Notification,
    Notifier,
    ReferenceResolver,
    Severity,
)

log = logging.getLogger(__name__)

MAX_BACKOFF = 60.0
MAX_PENDING = 256  # deliveries in flight; beyond this new ones are dropped (and logged)


@dataclass(frozen=True)
class Route:
    """Notifications of these kinds and environments, at least this severe, go to `channel`."""

    channel: str
    kinds: frozenset[str] = field(default_factory=frozenset)  # empty: every kind
    environments: frozenset[str] = field(default_factory=frozenset)  # empty: every environment
    min_severity: Severity = Severity.INFO

    def matches(self, notification: Notification) -> bool:
        """Whether `notification` takes this route."""
        if self.kinds and notification.kind not in self.kinds:
            return False
        if self.environments and notification.environment not in self.environments:
            return False
        return notification.severity.at_least(self.min_severity)


class NotificationDispatcher:
    """Sends each notification to the channels its routes name, without ever blocking the caller."""

    def __init__(
        self,
        channels: Mapping[str, Notifier],
        routes: Sequence[Route],
        *,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 1.0,
        delivery_log: DeliveryLog | None = None,
        masker: Masker | None = None,
        clock: Clock | None = None,
        jitter: Callable[[], float] = random.random,
        max_pending: int = MAX_PENDING,
    ) -> None:
        unknown = {route.channel for route in routes} - set(channels)
        if unknown:
            raise ValueError(f"routes name unknown channels: {', '.join(sorted(unknown))}")
        self.channels = dict(channels)
        self.routes = list(routes)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.delivery_log = delivery_log
        self.masker = masker
        self.clock: Clock = clock or SystemClock()
        self.jitter = jitter
        self.max_pending = max_pending
        self._pending: set[asyncio.Task[bool]] = set()

    @property
    def pending(self) -> int:
        """Deliveries still in flight (including their retries)."""
        return len(self._pending)

    def channels_for(self, notification: Notification) -> list[str]:
        """The channels `notification` goes to, each once, in route order."""
        names: list[str] = []
        for route in self.routes:
            if route.matches(notification) and route.channel not in names:
                names.append(route.channel)
        return names

    async def dispatch(self, notification: Notification) -> None:
        """Start delivering `notification` to every matching channel; return at once."""
        notification = self._masked(notification)
        for channel in self.channels_for(notification):
            if len(self._pending) >= self.max_pending:
                log.warning(
                    "dropped %s notification for %s: %d deliveries in flight",
                    notification.kind,
                    channel,
                    len(self._pending),
                )
                continue
            task = asyncio.create_task(
                self.deliver(notification, channel), name=f"notify {channel} {notification.kind}"
            )
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def deliver(self, notification: Notification, channel: str) -> bool:
        """Deliver to one channel now, with timeout and retries; True once an attempt succeeds.
        Never raises for a delivery failure (each attempt is logged)."""
        notifier = self.channels[channel]
        notification = self._masked(notification)
        for attempt in range(1, self.retries + 2):
            if attempt > 1:
                await self.clock.sleep(self._delay(attempt - 1))
            if await self._attempt(notifier, notification, channel, attempt):
                return True
        log.warning(
            "gave up on %s notification for %s after %d attempts",
            notification.kind,
            channel,
            self.retries + 1,
        )
        return False

    async def flush(self, timeout: float) -> int:
        """Wait up to `timeout` seconds for deliveries in flight; return how many are left."""
        if self._pending and timeout > 0:
            await asyncio.wait(set(self._pending), timeout=timeout)
        return len(self._pending)

    async def aclose(self, timeout: float = 0.0) -> None:
        """Flush for up to `timeout`, cancel what is left, close the channels' connections."""
        await self.flush(timeout)
        for task in list(self._pending):
            task.cancel()
        if self._pending:
            await asyncio.wait(set(self._pending))
        for notifier in self.channels.values():
            close = getattr(notifier, "aclose", None)
            if close is not None:
                await close()

    # -- one attempt --------------------------------------------------------------------------

    async def _attempt(
        self, notifier: Notifier, notification: Notification, channel: str, attempt: int
    ) -> bool:
        started = self.clock.monotonic()
        error: str | None = None
        status: int | None = None
        try:
            async with asyncio.timeout(self.timeout):
                await notifier.send(notification)
        except TimeoutError:
            error = f"{channel}: no answer within {self.timeout:g} s"
        except NotificationFailed as exc:
            error = str(exc)
            status = getattr(exc, "status_code", None)
        except Exception as exc:  # a notifier's bug must not escape into a deployment
            log.exception("notifier for %s failed unexpectedly", channel)
            error = f"{channel}: unexpected error: {type(exc).__name__}"
        seconds = self.clock.monotonic() - started
        if error is not None and self.masker is not None:
            error = self.masker.mask(error)
        await self._log(
            DeliveryAttempt(
                notification=notification,
                channel=channel,
                attempt=attempt,
                ok=error is None,
                seconds=seconds,
                at=self.clock.time(),
                error=error,
                status_code=status,
            )
        )
        if error is not None:
            log.info("notification attempt %d failed: %s", attempt, error)
        return error is None

    def _delay(self, retry: int) -> float:
        """Exponential backoff with 'equal jitter': half fixed, half random."""
        delay = min(MAX_BACKOFF, self.backoff * 2 ** (retry - 1))
        return float(delay / 2 + delay / 2 * self.jitter())

    async def _log(self, attempt: DeliveryAttempt) -> None:
        if self.delivery_log is None:
            return
        try:
            await self.delivery_log.record(attempt)
        except Exception:
            log.exception("could not record the delivery of %s", attempt.notification.id)

    def _masked(self, notification: Notification) -> Notification:
        masker = self.masker
        if masker is None:
            return notification
        return replace(
            notification,
            title=masker.mask(notification.title),
            text=masker.mask(notification.text),
            fields={label: masker.mask(value) for label, value in notification.fields.items()},
        )


def dispatcher_from_config(
    config: NotificationsConfig,
    *,
    delivery_log: DeliveryLog | None = None,
    resolver: ReferenceResolver | None = None,
    masker: Masker | None = None,
    clock: Clock | None = None,
) -> NotificationDispatcher:
    """A dispatcher for the `notifications:` section (backends imported only when configured)."""
    resolver = resolver or ReferenceResolver()
    channels: dict[str, Notifier] = {}
    for name, channel in config.channels.items():
        if channel.type == "slack":
            from zerodown.notifiers.slack import SlackNotifier

            channels[name] = SlackNotifier(name, channel.url, resolver=resolver)
        else:
            from zerodown.notifiers.webhook import WebhookNotifier

            assert channel.secret is not None  # the config model requires it for webhooks
            channels[name] = WebhookNotifier(
                name, channel.url, channel.secret, resolver=resolver, clock=clock
            )
    routes = [
        Route(
            channel=route.channel,
            kinds=frozenset(route.kinds),
            environments=frozenset(route.environments),
            min_severity=Severity(route.min_severity),
        )
        for route in config.routes
    ]
    return NotificationDispatcher(
        channels,
        routes,
        timeout=config.timeout,
        retries=config.retries,
        backoff=config.backoff,
        delivery_log=delivery_log,
        masker=masker,
        clock=clock,
    )
