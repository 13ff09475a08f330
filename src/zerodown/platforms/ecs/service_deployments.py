"""Our deployment in ECS's ServiceDeployments API, where the endpoint has it (moto does not).

ListServiceDeployments since just before our UpdateService, matched to ours by the task
definition of its target service revision (DescribeServiceRevisions), then
DescribeServiceDeployments on each look. An endpoint that refuses the first call has no such API:
the follower goes on with DescribeServices alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from zerodown.errors import PlatformError
from zerodown.platforms.ecs.client import AwsApi, Throttled

ENDED_BADLY = {
    "STOPPED",
    "STOP_REQUESTED",
    "ROLLBACK_REQUESTED",
    "ROLLBACK_IN_PROGRESS",
    "ROLLBACK_SUCCESSFUL",
    "ROLLBACK_FAILED",
}


class ServiceDeploymentWatch:
    """Finds and reads the ServiceDeployment of one UpdateService (`task_definition`)."""

    def __init__(
        self, api: AwsApi, cluster: str, service: str, task_definition: str, since: datetime
    ) -> None:
        self.api = api
        self.cluster = cluster
        self.service = service
        self.task_definition = task_definition
        self.since = since
        self.available: bool | None = None  # None until the endpoint answered once
        self.unavailable: str | None = None  # why not, when it refused
        self.arn: str | None = None

    async def look(self) -> dict[str, Any] | None:
        """Our ServiceDeployment as ECS has it now; None while not found or without the API."""
        if self.available is False:
            return None
        try:
            if self.arn is None:
                self.arn = await self._find()
                self.available = True
                if self.arn is None:
                    return None
            answer = await self.api.call(
                "ecs", "describe_service_deployments", serviceDeploymentArns=[self.arn]
            )
        except Throttled:
            raise
        except PlatformError as exc:
            if self.available is None:  # the first call: this endpoint has no such API
                self.available, self.unavailable = False, str(exc)
                return None
            raise
        found = answer.get("serviceDeployments") or []
        return dict(found[0]) if found else None

    async def _find(self) -> str | None:
        listed = await self.api.call(
            "ecs",
            "list_service_deployments",
            cluster=self.cluster,
            service=self.service,
            createdAt={"after": self.since},
        )
        for brief in listed.get("serviceDeployments", []):
            revision = brief.get("targetServiceRevisionArn")
            if not revision:
                continue
            described = await self.api.call(
                "ecs", "describe_service_revisions", serviceRevisionArns=[revision]
            )
            for item in described.get("serviceRevisions", []):
                if item.get("taskDefinition") == self.task_definition:
                    return str(brief["serviceDeploymentArn"])
        return None


def judge(deployment: dict[str, Any]) -> tuple[str, str, bool] | None:
    """(outcome, trigger, rolled back by ECS) of an ended ServiceDeployment; None while it runs.
    outcome is `succeeded` or the statusReason of a failure."""
    status = str(deployment.get("status", ""))
    if status == "SUCCESSFUL":
        return "succeeded", "", False
    if status not in ENDED_BADLY:
        return None
    if (deployment.get("deploymentCircuitBreaker") or {}).get("status") == "TRIGGERED":
        trigger = "circuit breaker"
    elif (deployment.get("alarms") or {}).get("status") == "TRIGGERED":
        names = ", ".join((deployment.get("alarms") or {}).get("triggeredAlarmNames", []))
        trigger = f"alarm {names}".strip()
    elif status.startswith("ROLLBACK"):
        trigger = "ecs rollback"
    else:
        trigger = "stopped"
    reason = str(deployment.get("statusReason") or status)
    return f"{status}: {reason}", trigger, status.startswith("ROLLBACK")
