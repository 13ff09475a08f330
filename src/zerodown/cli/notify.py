"""`zerodown notify test --channel NAME`: send a test message to one configured channel."""

from __future__ import annotations

import asyncio
import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from zerodown.cli.console import lazy_console
from zerodown.errors import ConfigError, NotificationFailed

if TYPE_CHECKING:  # imported where used, so that the CLI starts fast
    from zerodown.notifiers.base import DeliveryAttempt, DeliveryLog

notify_app = typer.Typer(help="Notifications: check that a Slack or webhook channel works.")
console = lazy_console(highlight=False)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="zerodown.yml (default: search upwards).")
]


class _Attempts:
    """A delivery log that keeps the attempts for the report and passes them on to the store."""

    def __init__(self, inner: DeliveryLog | None) -> None:
        self.inner = inner
        self.attempts: list[DeliveryAttempt] = []

    async def record(self, attempt: DeliveryAttempt) -> None:
        self.attempts.append(attempt)
        if self.inner is not None:
            await self.inner.record(attempt)


@notify_app.command("test")
def test_channel(
    channel: Annotated[str, typer.Option("--channel", help="A channel name from zerodown.yml.")],
    config: ConfigOption = None,
    retries: Annotated[int, typer.Option(help="Further attempts after a failed one.")] = 0,
) -> None:
    """Send a test message to CHANNEL now and say whether it arrived."""
    from zerodown.config import load_config
    from zerodown.notifiers.base import Notification, Severity

    loaded = load_config(config)
    settings = loaded.config.notifications
    if settings is None or channel not in settings.channels:
        known = ", ".join(sorted(settings.channels)) if settings else ""
        raise ConfigError(
            f"no channel {channel!r} in `notifications.channels` ({known or 'none defined'})",
            path=str(loaded.path),
            field="notifications.channels",
        )
    notification = Notification(
        kind="test",
        severity=Severity.INFO,
        environment=None,
        service=None,
        title=f"zerodown test message for {channel}",
        text=f"Sent by `zerodown notify test` from {loaded.config.project}: this channel works.",
        fields={"Project": loaded.config.project, "Sent by": getpass.getuser()},
        link=settings.dashboard_url,
    )

    async def send() -> list[DeliveryAttempt]:
        from zerodown.notifiers import open_dispatcher
        from zerodown.secrets.masking import global_masker
        from zerodown.store.sql import open_store

        store = open_store(loaded.store_url)
        try:
            dispatcher = open_dispatcher(loaded, store, masker=global_masker())
            assert dispatcher is not None  # notifications are configured (checked above)
            recording = _Attempts(dispatcher.delivery_log)
            dispatcher.delivery_log = recording
            dispatcher.retries = retries
            await dispatcher.deliver(notification, channel)
            await dispatcher.aclose()
            return recording.attempts
        finally:
            await store.close()

    attempts = asyncio.run(send())
    last = attempts[-1]
    if not last.ok:
        raise NotificationFailed(f"the test message did not arrive: {last.error}")
    name = settings.channels[channel].name or channel
    console.print(f"sent a test message to {name} in {last.seconds:.2f} s")


def register(app: typer.Typer) -> None:
    """Mount `zerodown notify ...` on the main app."""
    app.add_typer(notify_app, name="notify")
