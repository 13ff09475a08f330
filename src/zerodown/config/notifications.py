"""`notifications:` of zerodown.yml: channels (Slack, signed webhooks) and the routes to them.

```yaml
notifications:
  dashboard_url: https://deploy.example.com
  channels:
    prod-deployments: {type: slack, url: "${secret:SLACK_DEPLOYMENTS_URL}"}
    prod-alerts:      {type: slack, url: "${env:SLACK_ALERTS_URL}"}
    audit: {type: webhook, url: https://audit.example.com/hook, secret: "${secret:AUDIT}"}
  routes:
    - kinds: [deployment_started, deployment_succeeded, approval_needed]
      environments: [prod]
      channel: prod-deployments
    - kinds: [deployment_failed, deployment_rolled_back, alarm]
      environments: [prod]
      channel: prod-alerts
      min_severity: warning
```
A notification goes to every channel whose route matches its kind, environment and severity.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from zerodown.config.units import Duration

REFERENCE = re.compile(r"^\$\{(env|secret):([A-Za-z_][A-Za-z0-9_./-]*)\}$")
KIND = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def is_reference(value: str) -> bool:
    """Whether `value` is `${env:NAME}` or `${secret:NAME}` rather than a plain value."""
    return REFERENCE.match(value.strip()) is not None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChannelConfig(_Model):
    """Where one channel's notifications go."""

    type: Literal["slack", "webhook"] = Field(
        description="slack (an incoming-webhook URL) or webhook (JSON, HMAC-SHA256 signed)."
    )
    url: str = Field(
        description="The endpoint: a URL, or ${env:NAME} / ${secret:NAME} (Slack webhook URLs "
        "carry a token: prefer a reference)."
    )
    secret: str | None = Field(
        None,
        description="webhook: the signing key, as ${secret:NAME} or ${env:NAME} (never plain).",
    )
    name: str | None = Field(None, description="How people know it, e.g. #prod-alerts.")

    def __repr__(self) -> str:  # the URL may hold a token
        return f"ChannelConfig(type={self.type!r}, name={self.name!r})"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not is_reference(value) and not value.startswith(("http://", "https://")):
            raise ValueError("write an http(s) URL, ${env:NAME} or ${secret:NAME}")
        return value.strip()

    @model_validator(mode="after")
    def _secret(self) -> ChannelConfig:
        if self.type == "slack" and self.secret is not None:
            raise ValueError("`secret:` is for type webhook (Slack's URL is its own secret)")
        if self.type == "webhook":
            if self.secret is None:
                raise ValueError("type webhook needs `secret:` (${secret:NAME} or ${env:NAME})")
            if not is_reference(self.secret):
                # The key would end up in git and in every `zerodown check` output.
                raise ValueError("`secret:` must be ${secret:NAME} or ${env:NAME}, not the key")
        return self


class RouteConfig(_Model):
    """Which notifications a channel gets."""

    kinds: tuple[str, ...] = Field(
        (),
        description="Kinds to send (empty: every kind): deployment_started, "
        "deployment_succeeded, deployment_failed, deployment_rolled_back, alarm, "
        "approval_needed, test, and the pipeline's (pipeline_started, pipeline_failed, ...).",
    )
    environments: tuple[str, ...] = Field((), description="Environments (empty: every one).")
    channel: str = Field(description="A name from `channels:`.")
    min_severity: Literal["info", "warning", "critical"] = Field(
        "info", description="Send only notifications at least this severe."
    )

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for kind in value:
            if not KIND.match(kind):
                raise ValueError(f"kind {kind!r}: use lowercase letters, digits and '_'")
        return value


class NotificationsConfig(_Model):
    """Notifications: channels, routes, and how hard to try delivering."""

    dashboard_url: str = Field(
        "http://127.0.0.1:8686",
        description="Base URL of the dashboard; messages link <dashboard_url>/deployments/<id>.",
    )
    channels: dict[str, ChannelConfig] = Field(
        default_factory=dict, description="Channels, by name."
    )
    routes: tuple[RouteConfig, ...] = Field((), description="Which channels get what.")
    timeout: Duration = Field(5.0, description="Longest wait for one delivery attempt.")
    retries: int = Field(3, ge=0, le=10, description="Further attempts after a failed one.")
    backoff: Duration = Field(
        1.0, description="Wait before the first retry; doubles each time, with jitter."
    )
    secrets_environment: str | None = Field(
        None,
        description="Environment whose secrets ${secret:NAME} reads (default: the first one).",
    )

    @field_validator("dashboard_url")
    @classmethod
    def _dashboard(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"write an http(s) URL, not {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _routes(self) -> NotificationsConfig:
        for route in self.routes:
            if route.channel not in self.channels:
                known = ", ".join(sorted(self.channels)) or "none"
                raise ValueError(f"route to unknown channel {route.channel!r} (channels: {known})")
        if self.timeout <= 0:
            raise ValueError("timeout must be above zero")
        return self
