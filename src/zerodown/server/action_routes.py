"""The API's POST endpoints (`action_routes`): deploy, rollback, abort, and promote / pause /
resume with canaries; each needs `Authorization: Bearer <token>`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from zerodown.domain.records import DeploymentRecord
from zerodown.engine.deployer import Deployer, DeployRequest
from zerodown.errors import ConfigError
from zerodown.server.actions import Conflict, Started, not_found_or_bad
from zerodown.server.api_state import (
    NAME,
    Actor,
    ApiState,
    commands_available,
    find_deployment,
    require_target,
    state_of,
)


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


def _accepted(started: Started) -> JSONResponse:
    body = Accepted(
        id=started.deployment_id,
        state=started.state,
        stream=f"/api/deployments/{started.deployment_id}/events/stream",
    )
    return JSONResponse(body.model_dump(), status_code=202)


def action_routes() -> APIRouter:
    """POST endpoints: deploy, rollback, abort (and promote/pause/resume with canaries)."""
    api = APIRouter(prefix="/api", tags=["actions"])

    @api.post("/deployments", status_code=202, response_model=Accepted)
    async def deploy(request: Request, body: DeployBody, actor: Actor) -> JSONResponse:
        """Start a deployment in the background; follow it on its `stream`."""
        state = state_of(request)
        await require_target(state, body.service, body.environment)
        wanted = DeployRequest(body.service, body.environment, body.revision, actor)
        return _accepted(
            await _launch(state, body.service, body.environment, lambda d: d.deploy(wanted))
        )

    @api.post("/rollback", status_code=202, response_model=Accepted)
    async def rollback(request: Request, body: RollbackBody, actor: Actor) -> JSONResponse:
        """Deploy the previous good revision (or `to`) with the same zero-downtime mechanics."""
        state = state_of(request)
        await require_target(state, body.service, body.environment)

        def work(d: Deployer) -> Awaitable[DeploymentRecord]:
            return d.rollback(body.service, body.environment, to=body.to, actor=actor)

        return _accepted(await _launch(state, body.service, body.environment, work))

    @api.post("/deployments/{deployment_id}/abort", status_code=202)
    async def abort(request: Request, deployment_id: str, actor: Actor) -> dict[str, Any]:
        """Fail a running deployment now: the fleet rolls back to the previous revision."""
        state = state_of(request)
        record = await find_deployment(state, deployment_id)
        if record.state.terminal:
            raise HTTPException(409, f"deployment {record.id[:8]} already ended: {record.state}")
        reason = f"aborted by {actor} (API)"
        launcher = state.launcher
        if launcher.abort(record.service, record.environment, record.id, reason):
            return {"id": record.id, "aborting": True}
        if await launcher.abort_elsewhere(record.service, record.environment, record.id):
            return {"id": record.id, "aborting": True}
        raise HTTPException(409, f"deployment {record.id[:8]} is not running in any live process")

    if commands_available():

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
            record = await find_deployment(state, deployment_id)
            if record.state.terminal:
                raise HTTPException(409, f"deployment {record.id[:8]} already ended")
            sent = await send_command(state.plane.store, record.id, command, actor)
            return {"id": record.id, "command": sent.command.value}

    return api


def _command_path() -> Any:
    from fastapi import Path

    return Path(pattern="^(promote|promote_full|pause|resume)$")


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
