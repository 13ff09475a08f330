"""Following one ECS deployment to its end: our own PRIMARY deployment id, never a waiter.

Success is our id with rolloutState COMPLETED. Failure is our id FAILED (the circuit breaker or
an alarm, which roll back), our id gone (ECS rolled back to something else), or a timeout derived
from the service's own settings (`RolloutBudget`), said up front. Service events are recorded
once each, with ECS's timestamps.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from zerodown.clock import Clock
from zerodown.errors import PlatformError
from zerodown.platforms.ecs.client import AwsApi, Throttled
from zerodown.platforms.ecs.service_deployments import ServiceDeploymentWatch, judge

MAX_POLL_INTERVAL = 60.0  # throttled polls back off up to this
DEFAULT_STOP_TIMEOUT = 30.0  # Fargate's default stopTimeout
DEFAULT_DEREGISTRATION_DELAY = 300.0  # an ALB target group's default


class RolloutFailed(PlatformError):
    """Our ECS deployment did not complete; `trigger` says what ended it."""

    def __init__(self, message: str, *, trigger: str, rolled_back_by_ecs: bool) -> None:
        super().__init__(message)
        self.trigger = trigger  # circuit breaker | alarm | ecs rollback | timeout
        self.rolled_back_by_ecs = rolled_back_by_ecs


@dataclass(frozen=True)
class RolloutBudget:
    """How long the rollout may take, from the service's settings, and how that adds up."""

    parts: dict[str, float]
    waves: int

    @property
    def seconds(self) -> float:
        """Start allowance + waves x (grace + health + deregistration + stop)."""
        per_wave = sum(v for k, v in self.parts.items() if k != "start_allowance")
        return self.parts.get("start_allowance", 0.0) + self.waves * per_wave

    def describe(self) -> str:
        """`570 s = 120 start + 1 x (0 grace + 120 health + 300 deregistration + 30 stop)`."""
        wave = {k: v for k, v in self.parts.items() if k != "start_allowance"}
        inner = " + ".join(f"{v:.0f} {k.replace('_', ' ')}" for k, v in wave.items())
        start = self.parts.get("start_allowance", 0.0)
        return f"{self.seconds:.0f} s = {start:.0f} start + {self.waves} x ({inner})"


def waves_of(desired: int, maximum_percent: int, minimum_healthy_percent: int) -> int:
    """How many rounds of new tasks ECS needs to replace `desired` tasks."""
    if desired <= 0:
        return 1
    surge = math.floor(desired * (maximum_percent - 100) / 100)
    below = desired - math.ceil(desired * minimum_healthy_percent / 100)
    step = max(1, surge + max(0, below))
    return max(1, math.ceil(desired / step))


async def derive_budget(
    api: AwsApi, service: dict[str, Any], task: dict[str, Any], container: str, start: float
) -> RolloutBudget:
    """The budget of one rollout of `service` to `task` (a task definition)."""
    grace = float(service.get("healthCheckGracePeriodSeconds") or 0)
    definition: dict[str, Any] = next(
        (c for c in task.get("containerDefinitions", []) if c.get("name") == container), {}
    )
    check = definition.get("healthCheck") or {}
    container_health = 0.0
    if check:
        interval = float(check.get("interval", 30))
        container_health = float(check.get("startPeriod", 0)) + interval * int(
            check.get("retries", 3)
        )
    stop = max(
        [float(c.get("stopTimeout", DEFAULT_STOP_TIMEOUT)) for c in task["containerDefinitions"]]
    )
    target_health, deregistration = 0.0, 0.0
    balancers = service.get("loadBalancers", [])
    groups = [lb["targetGroupArn"] for lb in balancers if lb.get("targetGroupArn")]
    if groups:
        described = await api.call("elbv2", "describe_target_groups", TargetGroupArns=groups)
        for group in described.get("TargetGroups", []):
            target_health = max(
                target_health,
                float(group.get("HealthCheckIntervalSeconds", 30))
                * int(group.get("HealthyThresholdCount", 5)),
            )
            attributes = await api.call(
                "elbv2", "describe_target_group_attributes", TargetGroupArn=group["TargetGroupArn"]
            )
            for item in attributes.get("Attributes", []):
                if item.get("Key") == "deregistration_delay.timeout_seconds":
                    deregistration = max(deregistration, float(item.get("Value", 0)))
    config = service.get("deploymentConfiguration") or {}
    waves = waves_of(
        int(service.get("desiredCount", 1)),
        int(config.get("maximumPercent", 200)),
        int(config.get("minimumHealthyPercent", 100)),
    )
    return RolloutBudget(
        parts={
            "start_allowance": start,
            "grace": grace,
            "health": max(container_health, target_health),
            "deregistration": deregistration,
            "stop": stop,
        },
        waves=waves,
    )


@dataclass
class RolloutFollower:
    """Polls DescribeServices for our deployment until it ends; records new service events."""

    api: AwsApi
    cluster: str
    service: str
    clock: Clock
    poll_interval: float
    on_event: Callable[[dict[str, Any]], Awaitable[None]]  # one ECS service event, once
    on_progress: Callable[[dict[str, Any]], Awaitable[None]]  # our deployment, when it changed
    on_throttled: Callable[[float], Awaitable[None]]  # the next poll's interval
    on_notice: Callable[[str], Awaitable[None]]  # a sentence worth recording
    seen: set[str] = field(default_factory=set)

    async def remember_events(self) -> None:
        """Mark the events the service has now as seen (they are not about this deployment)."""
        for event in (await self.describe()).get("events", []):
            self.seen.add(str(event.get("id")))

    async def describe(self) -> dict[str, Any]:
        """The service as DescribeServices has it; PlatformError when it is missing."""
        answer = await self.api.call(
            "ecs", "describe_services", cluster=self.cluster, services=[self.service]
        )
        services = answer.get("services") or []
        if not services or services[0].get("status") == "INACTIVE":
            reason = (answer.get("failures") or [{}])[0].get("reason", "MISSING")
            raise PlatformError(
                f"ECS has no active service {self.service!r} in cluster {self.cluster!r} "
                f"({reason}): check `platform.service` and `platform.cluster`"
            )
        return dict(services[0])

    async def follow(
        self, deployment_id: str, timeout: float, watch: ServiceDeploymentWatch | None = None
    ) -> dict[str, Any]:
        """Wait for `deployment_id` to complete: its last state, or RolloutFailed. `watch`
        reads it in the ServiceDeployments API too, where the endpoint has it."""
        deadline = self.clock.monotonic() + timeout
        interval = self.poll_interval
        last: tuple[Any, ...] | None = None
        while True:
            try:
                service = await self.describe()
                interval = self.poll_interval
            except Throttled:
                interval = min(MAX_POLL_INTERVAL, interval * 2)
                await self.on_throttled(interval)
                service = None
            if service is not None:
                for event in reversed(service.get("events", [])):  # ECS lists newest first
                    if str(event.get("id")) not in self.seen:
                        self.seen.add(str(event.get("id")))
                        await self.on_event(event)
                ours = next(
                    (d for d in service.get("deployments", []) if d.get("id") == deployment_id),
                    None,
                )
                if ours is None:
                    now = [d.get("taskDefinition", "?") for d in service.get("deployments", [])]
                    raise RolloutFailed(
                        f"ECS deployment {deployment_id} is gone: ECS rolled the service back "
                        f"(it now runs {', '.join(now) or 'nothing'})",
                        trigger="ecs rollback",
                        rolled_back_by_ecs=True,
                    )
                state = ours.get("rolloutState")
                shape = (
                    state,
                    ours.get("status"),
                    ours.get("runningCount"),
                    ours.get("failedTasks"),
                )
                if shape != last:
                    last = shape
                    await self.on_progress(ours)
                if state == "COMPLETED" and ours.get("status") == "PRIMARY":
                    return dict(ours)
                if watch is not None and await self._ended_in(watch, deployment_id):
                    return dict(ours)
                if state == "FAILED":
                    reason = str(ours.get("rolloutStateReason") or "no reason given")
                    trigger = "alarm" if "alarm" in reason.lower() else "circuit breaker"
                    raise RolloutFailed(
                        f"ECS deployment {deployment_id} failed: {reason}",
                        trigger=trigger,
                        rolled_back_by_ecs="rollback" in reason.lower()
                        or "rolling back" in reason.lower(),
                    )
            left = deadline - self.clock.monotonic()
            if left <= 0:
                raise RolloutFailed(
                    f"ECS deployment {deployment_id} did not complete within {timeout:.0f} s "
                    "(the derived timeout; set `platform.timeout` to change it)",
                    trigger="timeout",
                    rolled_back_by_ecs=False,
                )
            await self.clock.sleep(min(interval, left))

    async def _ended_in(self, watch: ServiceDeploymentWatch, deployment_id: str) -> bool:
        """True when ServiceDeployments says ours succeeded; RolloutFailed when it ended badly."""
        known = watch.available
        try:
            found = await watch.look()
        except Throttled:
            return False  # the next look asks again
        if known is None and watch.available is False:
            await self.on_notice(
                "ecs: this endpoint has no ServiceDeployments API "
                f"({watch.unavailable}); following DescribeServices alone"
            )
        if known is None and watch.available:
            await self.on_notice("ecs: following the ServiceDeployments API too")
        verdict = judge(found) if found else None
        if verdict is None:
            return False
        outcome, trigger, by_ecs = verdict
        if outcome == "succeeded":
            return True
        raise RolloutFailed(
            f"ECS deployment {deployment_id} failed: {outcome}",
            trigger=trigger,
            rolled_back_by_ecs=by_ecs,
        )
