"""Notifications behind the `Notifier` seam: Slack incoming webhooks and signed generic webhooks.

`base` defines the seam, `slack` and `webhook` the backends (imported only when configured),
`dispatcher` the routing and background delivery, `deployment` the observer that turns deployment
events into notifications. `open_dispatcher` builds them from zerodown.yml for a control plane.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from zerodown.notifiers.base import Notification, NotificationKind, Notifier, Severity

if TYPE_CHECKING:
    from zerodown.config.loader import LoadedConfig
    from zerodown.engine.extensions import Masker
    from zerodown.notifiers.deployment import DeploymentNotifier
    from zerodown.notifiers.dispatcher import NotificationDispatcher
    from zerodown.routers.base import Router
    from zerodown.store.base import HistoryStore

__all__ = [
    "Notification",
    "NotificationKind",
    "Notifier",
    "Severity",
    "close_notifications",
    "deployment_notifier",
    "open_dispatcher",
]

# One notifier per control plane (extensions() runs for every deployer): one set of HTTP pools.
_NOTIFIERS: weakref.WeakKeyDictionary[Any, DeploymentNotifier] = weakref.WeakKeyDictionary()


def open_dispatcher(
    loaded: LoadedConfig, store: HistoryStore, *, masker: Masker | None = None
) -> NotificationDispatcher | None:
    """The dispatcher for zerodown.yml's `notifications:` (None when there is none), logging
    deliveries in `store` when it is the SQL history store."""
    from zerodown.notifiers.dispatcher import dispatcher_from_config
    from zerodown.notifiers.secret_refs import secret_resolver

    config = loaded.config.notifications
    if config is None:
        return None
    engine = store.sql_engine()
    delivery_log = None
    if engine is not None:
        from zerodown.store.deliveries import SqlDeliveryLog

        delivery_log = SqlDeliveryLog(engine)
    return dispatcher_from_config(
        config,
        delivery_log=delivery_log,
        resolver=secret_resolver(loaded),
        masker=masker,
    )


def deployment_notifier(
    plane: Any,
    *,
    store: HistoryStore,
    router: Router | None,
    loaded: LoadedConfig,
    masker: Masker | None = None,
) -> DeploymentNotifier | None:
    """The `DeploymentNotifier` of a control plane (made once per plane); None without config."""
    from zerodown.notifiers.deployment import DeploymentNotifier

    if plane in _NOTIFIERS:
        return _NOTIFIERS[plane]
    dispatcher = open_dispatcher(loaded, store, masker=masker)
    config = loaded.config.notifications
    if dispatcher is None or config is None:
        return None
    notifier = DeploymentNotifier(
        dispatcher,
        store,
        dashboard_url=config.dashboard_url,
        wanted_instances={name: svc.instances for name, svc in loaded.config.services.items()},
        router=router,
        settle_timeout=config.timeout,
    )
    _NOTIFIERS[plane] = notifier
    return notifier


async def close_notifications(plane: Any, timeout: float = 0.0) -> None:
    """Let a control plane's deliveries in flight finish for up to `timeout` seconds, then close
    its channels' connections (for `ControlPlane.close()`); nothing to do without notifications."""
    notifier = _NOTIFIERS.pop(plane, None)
    if notifier is not None:
        await notifier.dispatcher.aclose(timeout)
