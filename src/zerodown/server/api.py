"""The control plane's HTTP API and dashboard (FastAPI), served by `zerodown serve`.

Reads (services, environments, instances, deployments and their events, alarms, metrics, KPIs)
are open or need a token (`server.read_only_public`); actions (deploy, rollback, abort, promote)
always need `Authorization: Bearer <token>` (`zerodown token create NAME`). Deploys run in the
background of the serve process; `/api/deployments/{id}/events/stream` follows one live (SSE).
The OpenAPI document is at /openapi.json; the dashboard at /.
"""

from __future__ import annotations

from importlib import resources

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from zerodown import __version__
from zerodown.config.server import ServerConfig
from zerodown.control_plane import ControlPlane
from zerodown.errors import ConfigError, ZerodownError
from zerodown.server.action_routes import action_routes
from zerodown.server.actions import Conflict, Running
from zerodown.server.api_state import ApiState, read_access, state_of
from zerodown.server.pipeline_routes import pipeline_routes
from zerodown.server.read_routes import read_routes
from zerodown.server.webhooks import router as webhooks

DASHBOARD = resources.files("zerodown.server") / "dashboard"


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
    app.include_router(pipeline_routes())  # pipeline runs and approvals
    app.include_router(webhooks)  # the GitHub webhook
    app.mount("/static", StaticFiles(directory=str(DASHBOARD)), name="static")

    @app.get("/metrics", dependencies=[Depends(read_access)], response_class=Response)
    async def prometheus(request: Request) -> Response:
        """The router's metrics in Prometheus' text format (for a Prometheus to scrape)."""
        from zerodown.metrics.prometheus import render_prometheus

        source = state_of(request).plane.metrics
        body = render_prometheus(await source.report()) if source.measures else b""
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(DASHBOARD / "index.html"), headers={"Cache-Control": "no-store"})

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> RedirectResponse:
        return RedirectResponse("/")

    return app
