"""Generic webhooks: the notification as JSON, signed with HMAC-SHA256 of the body.

Headers: `X-Zerodown-Signature: sha256=<hex>` (HMAC-SHA256 of the exact body bytes with the
endpoint's secret), `X-Zerodown-Timestamp: <unix seconds>` (also inside the signed body as
`timestamp`, so a receiver can refuse replays), `X-Zerodown-Delivery: <notification id>`.
A receiver checks with `verify_signature(secret, body, header)`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from zerodown.clock import Clock, SystemClock
from zerodown.notifiers.base import Notification, ReferenceResolver
from zerodown.notifiers.http import HttpPoster

SIGNATURE_HEADER = "X-Zerodown-Signature"
TIMESTAMP_HEADER = "X-Zerodown-Timestamp"
DELIVERY_HEADER = "X-Zerodown-Delivery"


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: `sha256=` and the hex HMAC-SHA256 of `body`."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """Whether `header` is the signature of `body` under `secret` (constant-time compare)."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


def webhook_payload(notification: Notification, *, timestamp: int) -> dict[str, Any]:
    """The JSON body: every field of the notification, plus when it was sent."""
    n = notification
    return {
        "id": n.id,
        "kind": n.kind,
        "severity": n.severity.value,
        "environment": n.environment,
        "service": n.service,
        "deployment_id": n.deployment_id,
        "title": n.title,
        "text": n.text,
        "fields": dict(n.fields),
        "link": n.link,
        "at": n.at,
        "timestamp": timestamp,
    }


class WebhookNotifier:
    """POSTs signed JSON to one endpoint."""

    def __init__(
        self,
        channel: str,
        url: str,
        secret: str,
        *,
        resolver: ReferenceResolver | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.channel = channel
        self._url = url
        self._secret = secret  # a ${secret:NAME} / ${env:NAME} reference, resolved per send
        self._resolver = resolver or ReferenceResolver()
        self._clock: Clock = clock or SystemClock()
        self._poster = HttpPoster(channel)

    def __repr__(self) -> str:  # never show the URL or the key
        return f"WebhookNotifier({self.channel!r})"

    async def send(self, notification: Notification) -> None:
        """POST the signed body; NotificationFailed when the endpoint does not take it."""
        url = await self._resolver.resolve(self._url, what=f"{self.channel}: url")
        key = await self._resolver.resolve(self._secret, what=f"{self.channel}: secret")
        timestamp = int(self._clock.time())
        body = json.dumps(
            webhook_payload(notification, timestamp=timestamp),
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(key, body),
            TIMESTAMP_HEADER: str(timestamp),
            DELIVERY_HEADER: notification.id,
        }
        await self._poster.post(url, body, headers)

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._poster.aclose()
