"""The `Notifier` seam: what a notification is, how a channel sends one, how deliveries are logged.

Backends (`slack`, `webhook`) implement `Notifier`; the `NotificationDispatcher` routes each
`Notification` to channels and records every delivery attempt through a `DeliveryLog`.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from zerodown.config.notifications import REFERENCE
from zerodown.errors import NotificationFailed


class Severity(StrEnum):
    """How urgent a notification is; routes take those at or above their minimum."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for info, 1 for warning, 2 for critical (for `>=` comparisons)."""
        return _RANKS[self]

    def at_least(self, minimum: Severity) -> bool:
        """Whether this severity reaches `minimum`."""
        return self.rank >= minimum.rank


_RANKS = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class NotificationKind(StrEnum):
    """The kinds zerodown sends itself; other features (the pipeline) may add kinds of their own."""

    DEPLOYMENT_STARTED = "deployment_started"
    DEPLOYMENT_SUCCEEDED = "deployment_succeeded"
    DEPLOYMENT_FAILED = "deployment_failed"
    DEPLOYMENT_ROLLED_BACK = "deployment_rolled_back"
    ALARM = "alarm"
    APPROVAL_NEEDED = "approval_needed"
    TEST = "test"  # `zerodown notify test`


@dataclass(frozen=True)
class Notification:
    """One message for people: what happened, where, how bad, and where to look."""

    kind: str  # a `NotificationKind` value, or a feature's own kind (e.g. pipeline_failed)
    severity: Severity
    environment: str | None
    service: str | None
    title: str  # one line, e.g. "api deployed to prod"
    text: str  # a few lines of plain text (the reason of a failure, an alarm's condition)
    fields: dict[str, str] = field(default_factory=dict)  # label -> value, shown as a grid
    link: str | None = None  # the dashboard page to open
    deployment_id: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    at: float = field(default_factory=time.time)


class Notifier(Protocol):
    """Sends one notification to one channel; raises `NotificationFailed` saying why not."""

    async def send(self, notification: Notification) -> None: ...


@dataclass(frozen=True)
class DeliveryAttempt:
    """One try at sending one notification to one channel, as the delivery log keeps it."""

    notification: Notification
    channel: str
    attempt: int  # 1 for the first try
    ok: bool
    seconds: float
    at: float
    error: str | None = None  # why it failed (never a URL or a secret)
    status_code: int | None = None


class DeliveryLog(Protocol):
    """Where delivery attempts are recorded (the history store's `notification_deliveries`)."""

    async def record(self, attempt: DeliveryAttempt) -> None: ...


# -- secret references in channel settings ---------------------------------------------------------

SecretLookup = Callable[[str], Awaitable[str | None]]
"""Finds a named secret in the secret store (None: no such secret)."""


class ReferenceResolver:
    """Turns a channel setting (plain, `${env:NAME}` or `${secret:NAME}`) into its value, at send
    time: a missing secret fails that delivery (logged), never the deployment."""

    def __init__(
        self,
        *,
        secret_lookup: SecretLookup | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.secret_lookup = secret_lookup
        self.environ = environ if environ is not None else os.environ

    async def resolve(self, value: str, *, what: str) -> str:
        """The value `value` stands for; `what` names the setting in errors (never the value)."""
        found = REFERENCE.match(value.strip())
        if found is None:
            return value
        source, name = found.groups()
        if source == "env":
            resolved = self.environ.get(name)
            if not resolved:
                raise NotificationFailed(f"{what}: environment variable {name} is not set")
            return resolved
        if self.secret_lookup is None:
            raise NotificationFailed(
                f"{what}: ${{secret:{name}}} needs the secret store; set it with "
                f"`zerodown secrets set {name}` or use ${{env:{name}}}"
            )
        secret = await self.secret_lookup(name)
        if not secret:
            raise NotificationFailed(f"{what}: secret {name} is not in the secret store")
        return secret


def scrub(text: str, *secrets: str) -> str:
    """`text` with each of `secrets` (URLs with tokens, signing keys) replaced by `****`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "****")
    return text
