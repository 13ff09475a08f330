"""Slack incoming webhooks: Block Kit messages built only from `slack_sdk`'s block models.

A message is a header (emoji + title), the text, the fields as a two-column grid, a context line
(environment, service, kind, severity) and a button to the deployment's dashboard page. Every
text is cut to Slack's limits, so a long failure reason never makes Slack refuse the message.
"""

from __future__ import annotations

import json
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from zerodown.notifiers.base import Notification, ReferenceResolver, Severity
from zerodown.notifiers.http import HttpPoster

HEADER_MAX = 150  # HeaderBlock.text_max_length
SECTION_TEXT_MAX = 3000  # SectionBlock.text_max_length
FIELD_MAX = 2000  # per field text
FIELDS_PER_SECTION = 10  # SectionBlock.fields_max_length
BUTTON_TEXT_MAX = 75
URL_MAX = 3000

EMOJI = {
    "deployment_started": "🚀",
    "deployment_succeeded": "✅",
    "deployment_failed": "❌",
    "deployment_rolled_back": "↩️",
    "approval_needed": "✋",
    "test": "🔔",
}
ALARM_EMOJI = {Severity.CRITICAL: "🚨", Severity.WARNING: "⚠️", Severity.INFO: "✅"}


def cut(text: str, limit: int) -> str:
    """`text` shortened to `limit` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def escape(text: str) -> str:
    """Escape Slack's three control characters so user text never becomes markup or a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def emoji_for(notification: Notification) -> str:
    """The emoji that leads the header."""
    if notification.kind == "alarm":
        return ALARM_EMOJI[notification.severity]
    default = "🚨" if notification.severity is Severity.CRITICAL else "ℹ️"
    return EMOJI.get(notification.kind, default)


def slack_blocks(notification: Notification) -> list[Block]:
    """The Block Kit blocks of `notification`."""
    n = notification
    blocks: list[Block] = [
        HeaderBlock(
            text=PlainTextObject(text=cut(f"{emoji_for(n)} {n.title}", HEADER_MAX), emoji=True)
        )
    ]
    if n.text.strip():
        blocks.append(SectionBlock(text=MarkdownTextObject(text=cut(escape(n.text), 3000))))
    fields = [
        MarkdownTextObject(text=cut(f"*{escape(label)}*\n{escape(value)}", FIELD_MAX))
        for label, value in n.fields.items()
        if value
    ]
    for start in range(0, len(fields), FIELDS_PER_SECTION):
        blocks.append(SectionBlock(fields=fields[start : start + FIELDS_PER_SECTION]))
    where = " · ".join(
        part for part in (n.environment, n.service, n.kind, n.severity.value) if part
    )
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text=escape(where))]))
    if n.link and len(n.link) <= URL_MAX:
        style = "danger" if n.severity is Severity.CRITICAL else "primary"
        label = "View deployment" if n.deployment_id else "Open dashboard"
        blocks.append(
            ActionsBlock(
                elements=[
                    ButtonElement(
                        text=PlainTextObject(text=cut(label, BUTTON_TEXT_MAX)),
                        url=n.link,
                        style=style,
                        action_id="zerodown_open",
                    )
                ]
            )
        )
    return blocks


def slack_payload(notification: Notification) -> dict[str, Any]:
    """The JSON body for an incoming webhook: a fallback `text` plus the blocks."""
    blocks = slack_blocks(notification)
    return {
        # Shown in push notifications and by clients that cannot render blocks.
        "text": cut(f"{emoji_for(notification)} {notification.title}", SECTION_TEXT_MAX),
        "blocks": [block.to_dict() for block in blocks],  # to_dict validates against the limits
    }


class SlackNotifier:
    """Posts Block Kit messages to one Slack incoming webhook."""

    def __init__(
        self, channel: str, url: str, *, resolver: ReferenceResolver | None = None
    ) -> None:
        self.channel = channel
        self._url = url  # plain, or ${env:NAME} / ${secret:NAME}, resolved per send
        self._resolver = resolver or ReferenceResolver()
        self._poster = HttpPoster(channel)

    def __repr__(self) -> str:  # the webhook URL is a credential
        return f"SlackNotifier({self.channel!r})"

    async def send(self, notification: Notification) -> None:
        """POST the message; NotificationFailed when Slack does not accept it."""
        url = await self._resolver.resolve(self._url, what=f"{self.channel}: url")
        body = json.dumps(slack_payload(notification), ensure_ascii=False).encode()
        await self._poster.post(url, body, {"Content-Type": "application/json"})

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._poster.aclose()
