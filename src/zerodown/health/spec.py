"""What a health check looks like, as a plain value shared by the engine, the router and config."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

CheckKind = Literal["http", "tcp", "command"]


class TargetHealth(StrEnum):
    """A target's health as checks see it (the router routes by it)."""

    UNKNOWN = "unknown"  # added without `healthy=True` and not yet checked enough
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class HealthCheckSpec:
    """One health check and its timing policy.

    Defaults are the seeds' (`/actuator/health`, 10 s interval, 30 tries after a 30 s start period)
    scaled to the fastapi preset where noted in `zerodown.config`.
    """

    kind: CheckKind = "http"
    path: str = "/health"
    statuses: tuple[int, ...] = (200,)
    # JSON body fields that must equal these values, e.g. {"status": "UP"}; dotted paths allowed.
    json_fields: dict[str, Any] = field(default_factory=dict)
    host_header: str | None = None
    command: str | None = None  # kind == "command": run by /bin/sh -c; exit 0 is healthy
    timeout: float = 5.0  # one probe
    interval: float = 10.0
    # Probe interval while a new instance starts (like Docker's start_interval): short, so a deploy
    # waits no longer than needed for an instance that becomes healthy.
    start_interval: float = 0.25
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3
    start_period: float = 0.0  # failures during this period do not count against the instance
    deadline: float = 330.0  # a starting instance must be healthy within this many seconds

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (for the router's control socket and the history store)."""
        return {
            "kind": self.kind,
            "path": self.path,
            "statuses": list(self.statuses),
            "json_fields": dict(self.json_fields),
            "host_header": self.host_header,
            "command": self.command,
            "timeout": self.timeout,
            "interval": self.interval,
            "start_interval": self.start_interval,
            "healthy_threshold": self.healthy_threshold,
            "unhealthy_threshold": self.unhealthy_threshold,
            "start_period": self.start_period,
            "deadline": self.deadline,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HealthCheckSpec:
        values = dict(data)
        values["statuses"] = tuple(values.get("statuses", (200,)))
        return cls(**values)
