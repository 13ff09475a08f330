"""Health checks: probes (HTTP, TCP, command), the ongoing monitor, the wait for a new instance."""

from zerodown.health.checks import Prober, ProbeResult, probe
from zerodown.health.monitor import HealthMonitor, HealthReport, wait_until_healthy
from zerodown.health.spec import CheckKind, HealthCheckSpec

__all__ = [
    "CheckKind",
    "HealthCheckSpec",
    "HealthMonitor",
    "HealthReport",
    "ProbeResult",
    "Prober",
    "probe",
    "wait_until_healthy",
]
