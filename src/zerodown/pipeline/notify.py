"""Pipeline notices to people: through the notifications feature's dispatcher (Slack, signed
webhooks; routed by kind and environment) when zerodown.yml configures `notifications:`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zerodown.config import LoadedConfig
from zerodown.engine.extensions import Masker
from zerodown.pipeline.model import NullNotifier, PipelineNotice, PipelineNotifier
from zerodown.store.base import HistoryStore

if TYPE_CHECKING:
    from zerodown.notifiers.dispatcher import NotificationDispatcher

FLUSH_SECONDS = 10.0  # how long a finished run waits for its last notices to go out


class DispatcherNotifier:
    """`PipelineNotifier` over the `NotificationDispatcher` (delivery runs in the background)."""

    def __init__(self, dispatcher: NotificationDispatcher, *, link_base: str | None = None) -> None:
        self.dispatcher = dispatcher
        self.link_base = link_base

    async def notify(self, notice: PipelineNotice) -> None:
        """Hand the notice to the dispatcher; returns at once."""
        from zerodown.notifiers.base import Notification, Severity

        link = f"{self.link_base}/pipelines/{notice.run.id}" if self.link_base else None
        await self.dispatcher.dispatch(
            Notification(
                kind=notice.kind,
                severity=Severity(notice.severity),
                environment=notice.run.environment,
                service=None,
                title=notice.title,
                text=notice.text,
                fields=dict(notice.fields),
                link=link,
            )
        )

    async def close(self) -> None:
        """Wait (bounded) for pending deliveries, then release the dispatcher."""
        await self.dispatcher.flush(FLUSH_SECONDS)
        await self.dispatcher.aclose()


def notifier_from_config(
    loaded: LoadedConfig, store: HistoryStore, masker: Masker | None
) -> PipelineNotifier:
    """The configured notifier, or one that tells no one."""
    if getattr(loaded.config, "notifications", None) is None:
        return NullNotifier()
    from zerodown.notifiers import open_dispatcher

    dispatcher = open_dispatcher(loaded, store, masker=masker)
    return DispatcherNotifier(dispatcher) if dispatcher is not None else NullNotifier()


async def close_notifier(notifier: PipelineNotifier) -> None:
    """Flush a notifier that has something to flush."""
    if isinstance(notifier, DispatcherNotifier):
        await notifier.close()
