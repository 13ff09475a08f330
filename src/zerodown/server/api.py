"""The control plane's HTTP API and dashboard (FastAPI), served by `zerodown serve`.

Reads (services, environments, instances, deployments and their events, alarms, metrics, KPIs)
are open or need a token (`server.read_only_public`); actions (deploy, rollback, abort, promote)
always need `Authorization: Bearer <token>` (`zerodown token create NAME`). Deploys run in the
background of the serve process; `/api/deployments/{id}/events/stream` follows one live (SSE).
The OpenAPI document is at /openapi.json; the dashboard at /.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from zerodown import __version__
from zerodown.config.model import ZerodownConfig
from zerodown.config.server import ServerConfig
from zerodown.control_plane import ControlPlane, FleetStatus, check_target
from zerodown.engine.deployer import Deployer, DeployRequest
from zerodown.engine.events import DeploymentState
from zerodown.errors import ConfigError, StoreError, ZerodownError
from zerodown.routers.base import TrafficMetrics
from zerodown.server.actions import (
    Conflict,
    DeploymentLauncher,
    Running,
    Started,
    not_found_or_bad,
)
from zerodown.server.auth import TokenStore
from zerodown.server.canary_progress import canary_progress, deployment_actions
from zerodown.server.kpis import compute_kpis
from zerodown.server.streams import BusObserver, EventBus, deployment_stream
from zerodown.server.views import deployment_view, event_view, fleet_view
from zerodown.store.base import DeploymentRecord

DASHBOARD = resources.files("zerodown.server") / "dashboard"
NAME = r"^[a-z][a-z0-9-]{0,62}$"
bearer = HTTPBearer(auto_error=False, description="A token from `zerodown token create NAME`.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


class DeployBody(BaseModel):
    """Deploy a revision (git sha, tag or branch) of a service to an environment."""

    service: str = Field(pattern=NAME, max_length=63)
    environment: str = Field(pattern=NAME, max_length=63)
    revision: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._/@^~-]+$")


class RollbackBody(BaseModel):
    """Roll a service back to the previous good revision, or to `to`."""

    service: str = Field(pattern=NAME, max_length=63)
    environment: str = Field(pattern=NAME, max_length=63)
    to: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._/@^~-]+$")


class Accepted(BaseModel):
    """An action was accepted; the deployment runs in the background."""

    id: str
    state: str
    stream: str


class ApiState:
    """What the routes share: the plane, tokens, the launcher, the event bus."""

    def __init__(self, plane: ControlPlane, settings: ServerConfig, running: Running) -> None:
        self.plane = plane
        self.settings = settings
        self.tokens = TokenStore(_engine(plane))
        self.bus = EventBus()
        self.launcher = DeploymentLauncher(plane, running, [BusObserver(self.bus)])
        self.stopping = asyncio.Event()


def _engine(plane: ControlPlane) -> sa.Engine:
    engine = plane.store.sql_engine()
    if engine is None:
        raise ConfigError("the HTTP API needs the SQL history store (SQLite or PostgreSQL)")
    return engine


def state_of(request: Request) -> ApiState:
    """The API state of the app serving `request`."""
    state: ApiState = request.app.state.api
    return state


async def _token_name(state: ApiState, credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            401, "this needs a token: Authorization: Bearer <token> (zerodown token create NAME)"
        )
    name = await state.tokens.verify(credentials.credentials)
    if name is None:
        raise HTTPException(401, "unknown or revoked token")
    return name


async def require_token(request: Request, credentials: Credentials) -> str:
    """Every action: the name of the caller's token (the deployment's actor)."""
    return await _token_name(state_of(request), credentials)


async def read_access(request: Request, credentials: Credentials) -> None:
    """Reads: open when `server.read_only_public`, else a token too."""
    state = state_of(request)
    if not state.settings.read_only_public:
        await _token_name(state, credentials)


Actor = Annotated[str, Depends(require_token)]


async def _record(state: ApiState, deployment_id: str) -> DeploymentRecord:
    try:
        return await state.plane.store.get_deployment(deployment_id)
    except StoreError as exc:
        text = str(exc)
        if "no deployment" in text or "more than one" in text:
            raise HTTPException(404, text) from None
        raise


async def _target(state: ApiState, service: str, environment: str) -> None:
    """404 unless zerodown.yml (re-read when it changed) defines them; 400 for an invalid file."""
    try:
        loaded = await state.plane.refresh_config()
    except ConfigError as exc:
        raise HTTPException(400, str(exc)) from None
    try:
        check_target(loaded, service, environment)
    except ConfigError as exc:
        raise HTTPException(404, exc.reason) from None


def _accepted(started: Started) -> JSONResponse:
    body = Accepted(
        id=started.deployment_id,
        state=started.state,
        stream=f"/api/deployments/{started.deployment_id}/events/stream",
    )
    return JSONResponse(body.model_dump(), status_code=202)


def read_routes() -> APIRouter:
    """GET endpoints: what runs, what happened, how it performs."""
    api = APIRouter(prefix="/api", dependencies=[Depends(read_access)], tags=["read"])

    @api.get("/overview")
    async def overview(request: Request) -> dict[str, Any]:
        """The project, its services and environments, and which features this server has."""
        state = state_of(request)
        config = await _current_config(state)
        return {
            "project": config.project,
            "version": __version__,
            "services": sorted(config.services),
            "environments": sorted(config.environments),
            "read_only_public": state.settings.read_only_public,
            "features": {"promote": _commands_available()},
        }

    @api.get("/environments")
    async def environments(request: Request) -> list[dict[str, Any]]:
        """Environments with their branch, strategy and rollback policy."""
        config = await _current_config(state_of(request))
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
        await _current_config(state)  # status() lists what zerodown.yml defines now
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
        record = await _record(state, deployment_id)
        progress = await _progress(state, record)
        actions = deployment_actions(record, progress, commands=_commands_available())
        return {**deployment_view(record), "progress": progress, "actions": actions}

    @api.get("/deployments/{deployment_id}/events")
    async def deployment_events(
        request: Request,
        deployment_id: str,
        after: Annotated[int, Query(ge=0, le=2**31)] = 0,
    ) -> list[dict[str, Any]]:
        """A deployment's events after sequence number `after`, in order."""
        state = state_of(request)
        record = await _record(state, deployment_id)
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
        record = await _record(state, deployment_id)
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
        await _target(state, service, environment)
        return await _metric_series(state, f"{service}.{environment}", minutes)

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
        config = await _current_config(state)
        groups = [(s, e) for s in config.services for e in config.environments]
        found = await compute_kpis(
            state.tokens.engine, days=days, service=service, environment=environment, groups=groups
        )
        return [k.to_dict() for k in found]

    return api


def action_routes() -> APIRouter:
    """POST endpoints: deploy, rollback, abort (and promote/pause/resume with canaries)."""
    api = APIRouter(prefix="/api", tags=["actions"])

    @api.post("/deployments", status_code=202, response_model=Accepted)
    async def deploy(request: Request, body: DeployBody, actor: Actor) -> JSONResponse:
        """Start a deployment in the background; follow it on its `stream`."""
        state = state_of(request)
        await _target(state, body.service, body.environment)
        wanted = DeployRequest(body.service, body.environment, body.revision, actor)
        return _accepted(
            await _launch(state, body.service, body.environment, lambda d: d.deploy(wanted))
        )

    @api.post("/rollback", status_code=202, response_model=Accepted)
    async def rollback(request: Request, body: RollbackBody, actor: Actor) -> JSONResponse:
        """Deploy the previous good revision (or `to`) with the same zero-downtime mechanics."""
        state = state_of(request)
        await _target(state, body.service, body.environment)

        def work(d: Deployer) -> Awaitable[DeploymentRecord]:
            return d.rollback(body.service, body.environment, to=body.to, actor=actor)

        return _accepted(await _launch(state, body.service, body.environment, work))

    @api.post("/deployments/{deployment_id}/abort", status_code=202)
    async def abort(request: Request, deployment_id: str, actor: Actor) -> dict[str, Any]:
        """Fail a running deployment now: the fleet rolls back to the previous revision."""
        state = state_of(request)
        record = await _record(state, deployment_id)
        if record.state.terminal:
            raise HTTPException(409, f"deployment {record.id[:8]} already ended: {record.state}")
        reason = f"aborted by {actor} (API)"
        launcher = state.launcher
        if launcher.abort(record.service, record.environment, record.id, reason):
            return {"id": record.id, "aborting": True}
        if await launcher.abort_elsewhere(record.service, record.environment, record.id):
            return {"id": record.id, "aborting": True}
        raise HTTPException(409, f"deployment {record.id[:8]} is not running in any live process")

    if _commands_available():

        @api.post("/deployments/{deployment_id}/{command}", status_code=202)
        async def steer(
            request: Request,
            deployment_id: str,
            command: Annotated[str, _command_path()],
            actor: Actor,
        ) -> dict[str, Any]:
            """Promote, fully promote, pause or resume a running canary / blue-green deploy."""
            from zerodown.engine.commands import send_command

            state = state_of(request)
            record = await _record(state, deployment_id)
            if record.state.terminal:
                raise HTTPException(409, f"deployment {record.id[:8]} already ended")
            sent = await send_command(state.plane.store, record.id, command, actor)
            return {"id": record.id, "command": sent.command.value}

    return api


def _command_path() -> Any:
    from fastapi import Path

    return Path(pattern="^(promote|promote_full|pause|resume)$")


def _commands_available() -> bool:
    try:
        import zerodown.engine.commands  # noqa: F401  (the progressive feature may be absent)
    except ImportError:
        return False
    return True


async def _launch(
    state: ApiState,
    service: str,
    environment: str,
    work: Callable[[Deployer], Awaitable[DeploymentRecord]],
) -> Started:
    try:
        return await state.launcher.start(service, environment, work)
    except Conflict as exc:
        raise HTTPException(409, str(exc)) from None
    except ConfigError as exc:
        raise HTTPException(not_found_or_bad(exc), exc.reason) from None


async def _current_config(state: ApiState) -> ZerodownConfig:
    """zerodown.yml as it is now, so reads list what it defines; while the file is invalid,
    reads keep the last good config (actions refuse with the error)."""
    try:
        return (await state.plane.refresh_config()).config
    except ConfigError:
        return state.plane.loaded.config


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
    router = state.plane.router
    since = time.time() - minutes * 60
    if not isinstance(router, TrafficMetrics):
        return {"route": route, "period": 10, "series": [], "health": [], "measured": False}
    raw = await router.metrics(since=since)
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


def create_app(
    plane: ControlPlane,
    *,
    settings: ServerConfig | None = None,
    running: Running | None = None,
) -> FastAPI:
    """The API + dashboard for `plane`. `running` is shared with the local socket API so
    `zerodown abort` reaches deployments the API started (and the other way round)."""
    app = FastAPI(
        title="zerodown control plane",
        version=__version__,
        description=__doc__,
        docs_url="/api/docs",
        redoc_url=None,
    )
    state = ApiState(
        plane, settings or plane.loaded.config.server, {} if running is None else running
    )
    app.state.api = state

    @app.exception_handler(ZerodownError)
    async def zerodown_error(request: Request, exc: ZerodownError) -> JSONResponse:
        status = 409 if isinstance(exc, Conflict) else 400 if isinstance(exc, ConfigError) else 503
        return JSONResponse({"detail": str(exc)}, status_code=status)

    app.include_router(read_routes())
    app.include_router(action_routes())
    # pipeline runs, approvals and the GitHub webhook (imported here: they import this module)
    from zerodown.server.pipeline_routes import pipeline_routes
    from zerodown.server.webhooks import router as webhooks

    app.include_router(pipeline_routes())
    app.include_router(webhooks)
    app.mount("/static", StaticFiles(directory=str(DASHBOARD)), name="static")

    @app.get("/metrics", dependencies=[Depends(read_access)], response_class=Response)
    async def prometheus(request: Request) -> Response:
        """The router's metrics in Prometheus' text format (for a Prometheus to scrape)."""
        from zerodown.metrics.prometheus import render_prometheus

        router = state_of(request).plane.router
        body = (
            render_prometheus(await router.metrics()) if isinstance(router, TrafficMetrics) else b""
        )
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(DASHBOARD / "index.html"), headers={"Cache-Control": "no-store"})

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> RedirectResponse:
        return RedirectResponse("/")

    return app
