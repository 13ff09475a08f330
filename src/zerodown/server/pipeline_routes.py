"""Pipeline runs in the API: list and show them (read access), approve one (a token)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request

from zerodown.errors import PipelineError, StoreError
from zerodown.pipeline.approvals import approve
from zerodown.pipeline.history import PipelineHistory
from zerodown.pipeline.model import RunRecord
from zerodown.server.api import Actor, _state, read_access
from zerodown.store.sql import SqlHistoryStore


def _history(request: Request) -> PipelineHistory:
    store = _state(request).plane.store
    assert isinstance(store, SqlHistoryStore)  # the API serves the SQL history only
    return PipelineHistory(store)


async def _get_run(history: PipelineHistory, run_id: str) -> RunRecord:
    try:
        return await history.get_run(run_id)
    except StoreError as exc:  # unknown or ambiguous id
        raise HTTPException(status_code=404, detail=str(exc)) from None


def _run_json(run: RunRecord) -> dict[str, Any]:
    return {
        "id": run.id,
        "branch": run.branch,
        "sha": run.sha,
        "environment": run.environment,
        "state": str(run.state),
        "trigger": run.trigger,
        "actor": run.actor,
        "inputs": dict(run.inputs),
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "duration": run.duration,
        "reason": run.reason,
        "commit_message": run.commit_message,
    }


def pipeline_routes() -> APIRouter:
    """GET /api/pipeline/runs, GET /api/pipeline/runs/{id}, POST .../{id}/approve."""
    api = APIRouter(prefix="/api/pipeline", tags=["pipeline"])

    @api.get("/runs", dependencies=[Depends(read_access)])
    async def list_runs(
        request: Request, environment: str | None = None, limit: int = 30
    ) -> list[dict[str, Any]]:
        """Pipeline runs, newest first."""
        runs = await _history(request).list_runs(
            environment=environment, limit=max(1, min(limit, 500))
        )
        return [_run_json(run) for run in runs]

    @api.get("/runs/{run_id}", dependencies=[Depends(read_access)])
    async def show_run(request: Request, run_id: str) -> dict[str, Any]:
        """One run (an id or a unique id prefix)."""
        history = _history(request)
        run = await _get_run(history, run_id)
        return {**_run_json(run), "approvers": await history.approvers(run.id)}

    @api.post("/runs/{run_id}/approve")
    async def approve_run(request: Request, run_id: str, actor: Actor) -> dict[str, Any]:
        """Approve a run waiting for approval, as the token's owner (each approver counts once)."""
        history = _history(request)
        run = await _get_run(history, run_id)
        try:
            added, approvers = await approve(history, run.id, actor, now=time.time())
        except PipelineError as exc:  # the run has ended
            raise HTTPException(status_code=409, detail=str(exc)) from None
        return {"run": run.id, "new": added, "approvers": approvers}

    return api
