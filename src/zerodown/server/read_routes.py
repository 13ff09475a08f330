"""The API's GET endpoints (`read_routes`): services, environments, instances, deployments and
their events, alarms, metrics, KPIs; open or behind a token (`server.read_only_public`)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from zerodown import __version__
from zerodown.control_plane import FleetStatus
from zerodown.domain.events import DeploymentState
from zerodown.domain.records import DeploymentRecord
from zerodown.domain.routes import route_name
from zerodown.server.api_state import (
    NAME,
    ApiState,
    commands_available,
    current_config,
    find_deployment,
    read_access,
    require_target,
    state_of,
)
from zerodown.server.canary_progress import canary_progress, deployment_actions
from zerodown.server.kpis import compute_kpis
from zerodown.server.streams import deployment_stream
from zerodown.server.views import deployment_view, event_view, fleet_view


def read_routes() -> APIRouter:
    """GET endpoints: what runs, what happened, how it performs."""
    api = APIRouter(prefix="/api", dependencies=[Depends(read_access)], tags=["read"])

    @api.get("/overview")
    async def overview(request: Request) -> dict[str, Any]:
        """The project, its services and environments, and which features this server has."""
        state = state_of(request)
        config = await current_config(state)
        return {
            "project": config.project,
            "version": __version__,
            "services": sorted(config.services),
            "environments": sorted(config.environments),
            "read_only_public": state.settings.read_only_public,
            "features": {"promote": commands_available()},
        }

    @api.get("/environments")
    async def environments(request: Request) -> list[dict[str, Any]]:
        """Environments with their branch, strategy and rollback policy."""
        config = await current_config(state_of(request))
        return [
            {
                "name": name,
                "branch": env.branch,
                "strategy": env.strategy.type,
                "auto_rollback": env.auto_rollback,
            }
            for name, env in sorted(config.environments.items())
        ]

    @api.get("/services")
    async def services(request: Request) -> list[dict[str, Any]]:
        """Every service x environment: live revision, targets and their health, instances, and
        what `rollback` would deploy (`rollback_to`, None: no earlier good revision)."""
        state = state_of(request)
        await current_config(state)  # status() lists what zerodown.yml defines now
        return [
            {**fleet_view(item), "rollback_to": await _rollback_candidate(state, item)}
            for item in await state.plane.status()
        ]

    @api.get("/instances")
    async def instances(
        request: Request,
        service: Annotated[str | None, Query(max_length=63)] = None,
        environment: Annotated[str | None, Query(max_length=63)] = None,
    ) -> list[dict[str, Any]]:
        """Running instances with the router's view of their health."""
        out = []
        for item in await state_of(request).plane.status():
            if service not in (None, item.service) or environment not in (None, item.environment):
                continue
            view = fleet_view(item)
            health = {t["instance"]: t for t in view["targets"]}
            for instance in view["instances"]:
                target = health.get(instance["instance"], {})
                out.append(
                    {
                        **instance,
                        "service": item.service,
                        "environment": item.environment,
                        "health": target.get("health"),
                        "draining": target.get("draining", False),
                        "inflight": target.get("inflight", 0),
                    }
                )
        return out

    @api.get("/deployments")
    async def deployments(
        request: Request,
        service: Annotated[str | None, Query(max_length=63)] = None,
        environment: Annotated[str | None, Query(max_length=63)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> list[dict[str, Any]]:
        """Deployments, newest first."""
        store = state_of(request).plane.store
        found = await store.list_deployments(service=service, environment=environment, limit=limit)
        return [deployment_view(r) for r in found]

    @api.get("/deployments/{deployment_id}")
    async def deployment(request: Request, deployment_id: str) -> dict[str, Any]:
        """One deployment (a unique id prefix of 4+ characters works too), with a canary's
        `progress` (step, weights per revision, waiting for promote, paused) and the `actions`
        that apply to it now."""
        state = state_of(request)
        record = await find_deployment(state, deployment_id)
        progress = await _progress(state, record)
        actions = deployment_actions(record, progress, commands=commands_available())
        return {**deployment_view(record), "progress": progress, "actions": actions}

    @api.get("/deployments/{deployment_id}/events")
    async def deployment_events(
        request: Request,
        deployment_id: str,
        after: Annotated[int, Query(ge=0, le=2**31)] = 0,
    ) -> list[dict[str, Any]]:
        """A deployment's events after sequence number `after`, in order."""
        state = state_of(request)
        record = await find_deployment(state, deployment_id)
        return [event_view(s, e) for s, e in await state.plane.store.events(record.id, after=after)]

    @api.get(
        "/deployments/{deployment_id}/events/stream",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def deployment_event_stream(
        request: Request,
        deployment_id: str,
        after: Annotated[int, Query(ge=0, le=2**31)] = 0,
    ) -> StreamingResponse:
        """Server-Sent Events: `deployment_event` per event as it happens, then `end`."""
        state = state_of(request)
        record = await find_deployment(state, deployment_id)
        last_id = request.headers.get("last-event-id", "")
        start = int(last_id) if last_id.isdigit() else after
        stream = deployment_stream(
            state.plane.store,
            record.id,
            after=start,
            bus=state.bus,
            gone=request.is_disconnected,
            stopping=state.stopping,
        )
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)

    @api.get("/alarms")
    async def alarms(
        request: Request,
        environment: Annotated[str | None, Query(max_length=63)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Alarm state changes, newest first (from the alarms' history)."""
        engine = state_of(request).tokens.engine
        return await asyncio.to_thread(_alarm_history, engine, environment, limit)

    @api.get("/metrics")
    async def metrics(
        request: Request,
        service: Annotated[str, Query(pattern=NAME, max_length=63)],
        environment: Annotated[str, Query(pattern=NAME, max_length=63)],
        minutes: Annotated[float, Query(gt=0, le=24 * 60)] = 15,
    ) -> dict[str, Any]:
        """Requests, 5xx and latency per revision per 10 s period (the router's datapoints)."""
        state = state_of(request)
        await require_target(state, service, environment)
        return await _metric_series(state, route_name(service, environment), minutes)

    @api.get("/kpis")
    async def kpis(
        request: Request,
        service: Annotated[str | None, Query(max_length=63)] = None,
        environment: Annotated[str | None, Query(max_length=63)] = None,
        days: Annotated[float, Query(gt=0, le=3660)] = 30,
    ) -> list[dict[str, Any]]:
        """Delivery KPIs of the configured services and environments, with the seeds' targets
        (the history of one removed from zerodown.yml stays in the store, not in this list)."""
        state = state_of(request)
        config = await current_config(state)
        groups = [(s, e) for s in config.services for e in config.environments]
        found = await compute_kpis(
            state.tokens.engine, days=days, service=service, environment=environment, groups=groups
        )
        return [k.to_dict() for k in found]

    return api


async def _progress(state: ApiState, record: DeploymentRecord) -> dict[str, Any] | None:
    if record.strategy != "canary":
        return None
    environment = state.plane.loaded.config.environments.get(record.environment)
    steps = environment.strategy.steps if environment is not None else ()
    events = [event for _, event in await state.plane.store.events(record.id)]
    return canary_progress(record, events, steps)


async def _rollback_candidate(state: ApiState, item: FleetStatus) -> dict[str, Any] | None:
    """The deployment `rollback` would redeploy: the newest success of another revision than
    the one serving (the deployer's rule), or None."""
    current = item.revision or (item.live.revision if item.live else None)
    if current is None:
        return None
    found = await state.plane.store.list_deployments(
        service=item.service, environment=item.environment, limit=200
    )
    for record in found:
        if record.state is DeploymentState.SUCCEEDED and record.revision != current:
            return deployment_view(record)
    return None


def _alarm_history(engine: sa.Engine, environment: str | None, limit: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        if sa.inspect(conn).has_table("alarm_history"):
            table = sa.Table("alarm_history", sa.MetaData(), autoload_with=conn)
            query = sa.select(table).order_by(table.c.at.desc()).limit(limit)
            if environment is not None:
                query = query.where(table.c.environment == environment)
            return [dict(row._mapping) for row in conn.execute(query)]
        # Without the alarms feature's table, the alarm events of deployments are the history.
        events = sa.table(
            "events",
            sa.column("deployment_id"),
            sa.column("kind"),
            sa.column("at"),
            sa.column("message"),
            sa.column("data"),
        )
        e = events.c
        query = (
            sa.select(e.deployment_id, e.at, e.message, e.data)
            .where(e.kind == "alarm")
            .order_by(e.at.desc())
            .limit(limit)
        )
        return [dict(row._mapping) for row in conn.execute(query)]


async def _metric_series(state: ApiState, route: str, minutes: float) -> dict[str, Any]:
    source = state.plane.metrics
    since = time.time() - minutes * 60
    if not source.measures:
        return {"route": route, "period": 10, "series": [], "health": [], "measured": False}
    raw = await source.report(since=since)
    points = [p for p in raw.get("datapoints", []) if p.get("service") == route]
    from zerodown.metrics.series import aggregate

    series = []
    for group in aggregate(points, by=("at", "revision"), since=since):
        view = group.to_json()
        view["at"] = float(view["at"])
        series.append(view)
    health = [h for h in raw.get("health", []) if h.get("service") == route]
    return {
        "route": route,
        "period": raw.get("period", 10),
        "series": series,
        "health": health,
        "measured": True,
    }
