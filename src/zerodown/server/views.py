"""How the HTTP API shows the control plane's objects: JSON-ready dicts, one function per kind."""

from __future__ import annotations

from typing import Any

from zerodown.control_plane import ControlPlane, FleetStatus, Orphan
from zerodown.domain.events import DeploymentEvent
from zerodown.domain.records import DeploymentRecord
from zerodown.domain.routes import route_name
from zerodown.refs import REF_LABEL, revision_label


def record_revision_label(record: DeploymentRecord) -> str:
    """A deployment's revision as a user reads it: `v2 (1f03ba05)`, or the short sha."""
    return revision_label(record.revision, record.labels.get(REF_LABEL))


def _ref_names(*records: DeploymentRecord | None) -> dict[str, str]:
    """sha -> the ref a deployment of it was named by (the newest record wins)."""
    names: dict[str, str] = {}
    for record in reversed([r for r in records if r is not None]):
        if ref := record.labels.get(REF_LABEL):
            names[record.revision] = ref
    return names


def fleet_revision_label(item: FleetStatus, sha: str | None) -> str:
    """A revision running in a fleet, named by the ref its live or last deployment used."""
    return revision_label(sha, _ref_names(item.last, item.live).get(sha or ""))


def deployment_view(record: DeploymentRecord) -> dict[str, Any]:
    """A deployment as the API lists it."""
    return {
        "id": record.id,
        "service": record.service,
        "environment": record.environment,
        "revision": record.revision,
        "revision_label": record_revision_label(record),
        "previous_revision": record.previous_revision,
        "kind": record.kind,
        "strategy": record.strategy,
        "state": record.state.value,
        "terminal": record.state.terminal,
        "actor": record.actor,
        "reason": record.reason,
        "commit_message": record.commit_message,
        "commit_time": record.commit_time,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "duration": record.duration,
    }


def event_view(seq: int, event: DeploymentEvent) -> dict[str, Any]:
    """One deployment event with its sequence number."""
    return {
        "seq": seq,
        "deployment_id": event.deployment_id,
        "kind": event.kind.value,
        "message": event.message,
        "data": event.data,
        "at": event.at,
    }


def fleet_view(item: FleetStatus) -> dict[str, Any]:
    """One service in one environment: live revision, targets with health, instances."""
    targets = []
    if item.route is not None:
        weights = item.route.target_weights()
        for t in item.route.targets:
            targets.append(
                {
                    "instance": t.spec.target_id,
                    "address": t.spec.address,
                    "revision": t.spec.revision,
                    "revision_label": fleet_revision_label(item, t.spec.revision),
                    "pool": t.spec.pool,
                    "weight": round(weights[t.spec.target_id], 3),  # its share of its pool's
                    "health": t.health.value,
                    "draining": t.draining,
                    "inflight": t.inflight,
                }
            )
    return {
        "service": item.service,
        "environment": item.environment,
        "route": route_name(item.service, item.environment),
        "listen": list(item.listen),
        "revision": item.revision,
        "revision_label": fleet_revision_label(item, item.revision) if item.revision else None,
        "live": deployment_view(item.live) if item.live else None,
        "healthy": item.route.healthy_count if item.route else 0,
        "targets": targets,
        "instances": [
            {
                "instance": i.instance_id,
                "revision": i.revision,
                "revision_label": fleet_revision_label(item, i.revision),
                "state": i.state.value,
                "pid": i.pid,
                "port": i.port,
                "restarts": i.restarts,
            }
            for i in item.instances
        ],
        "last_deployment": deployment_view(item.last) if item.last else None,
    }


def orphan_view(orphan: Orphan) -> dict[str, Any]:
    """Instances (and a route) of a service/environment zerodown.yml no longer defines."""
    return {
        "service": orphan.service,
        "environment": orphan.environment,
        "orphan": True,
        "route": orphan.route.route.service if orphan.route else None,
        "stop": orphan.stop_command,
        "instances": [
            {"instance": i.instance_id, "revision": i.revision, "state": i.state.value}
            for i in orphan.instances
        ],
    }


async def status_views(plane: ControlPlane) -> list[dict[str, Any]]:
    """`zerodown status --json`: each configured service x environment, then the orphans."""
    fleets = [fleet_view(item) for item in await plane.status()]
    return fleets + [orphan_view(orphan) for orphan in await plane.orphans()]
