"""What the API's routes share: `ApiState` (plane, tokens, launcher, event bus), the token
dependencies (`require_token`, `read_access`, `Actor`) and the lookups that answer 404/400."""

from __future__ import annotations

import asyncio
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from zerodown.config.model import ZerodownConfig
from zerodown.config.server import ServerConfig
from zerodown.control_plane import ControlPlane, check_target
from zerodown.domain.records import DeploymentRecord
from zerodown.errors import ConfigError, StoreError
from zerodown.server.actions import DeploymentLauncher, Running
from zerodown.server.auth import TokenStore
from zerodown.server.streams import BusObserver, EventBus

NAME = r"^[a-z][a-z0-9-]{0,62}$"
bearer = HTTPBearer(auto_error=False, description="A token from `zerodown token create NAME`.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


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


async def find_deployment(state: ApiState, deployment_id: str) -> DeploymentRecord:
    """The deployment (or unique id prefix); 404 when there is none or more than one."""
    try:
        return await state.plane.store.get_deployment(deployment_id)
    except StoreError as exc:
        text = str(exc)
        if "no deployment" in text or "more than one" in text:
            raise HTTPException(404, text) from None
        raise


async def require_target(state: ApiState, service: str, environment: str) -> None:
    """404 unless zerodown.yml (re-read when it changed) defines them; 400 for an invalid file."""
    try:
        loaded = await state.plane.refresh_config()
    except ConfigError as exc:
        raise HTTPException(400, str(exc)) from None
    try:
        check_target(loaded, service, environment)
    except ConfigError as exc:
        raise HTTPException(404, exc.reason) from None


def commands_available() -> bool:
    """Whether the progressive feature (promote / pause / resume) is installed."""
    try:
        import zerodown.engine.commands  # noqa: F401  (the progressive feature may be absent)
    except ImportError:
        return False
    return True


async def current_config(state: ApiState) -> ZerodownConfig:
    """zerodown.yml as it is now, so reads list what it defines; while the file is invalid,
    reads keep the last good config (actions refuse with the error)."""
    try:
        return (await state.plane.refresh_config()).config
    except ConfigError:
        return state.plane.loaded.config
