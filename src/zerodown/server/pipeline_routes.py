"""Pipeline runs in the API: list and show them, their jobs and logs (read access), approve one
(a token)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request

from zerodown.errors import PipelineError, StoreError
from zerodown.pipeline.approvals import approve
from zerodown.pipeline.history import PipelineHistory
from zerodown.pipeline.model import JobRecord, LogLine, RunRecord
from zerodown.server.api_state import Actor, read_access, state_of
from zerodown.store.sql import SqlHistoryStore


def _history(request: Request) -> PipelineHistory:
    store = state_of(request).plane.store
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


_MAX_LOG_ID = 2**62  # SQLite integers are 64-bit: a larger `after` would overflow the query
_MAX_LOG_LINES = 5000


def _job_json(job: JobRecord) -> dict[str, Any]:
    return {
        "name": job.name,
        "kind": job.kind,
        "state": str(job.state),
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "duration": (
            None
            if job.started_at is None or job.finished_at is None
            else job.finished_at - job.started_at
        ),
        "exit_code": job.exit_code,
        "command_seconds": job.command_seconds,
        "summary": dict(job.summary),
        "reason": job.reason,
    }


def _line_json(line: LogLine) -> dict[str, Any]:
    return {"id": line.id, "job": line.job, "at": line.at, "line": line.line}


def pipeline_routes() -> APIRouter:
    """GET /api/pipeline/runs, GET /api/pipeline/runs/{id}, GET .../{id}/jobs,
    GET .../{id}/logs, POST .../{id}/approve."""
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

    @api.get("/runs/{run_id}/jobs", dependencies=[Depends(read_access)])
    async def run_jobs(request: Request, run_id: str) -> list[dict[str, Any]]:
        """The run's jobs, in the order they were first saved."""
        history = _history(request)
        run = await _get_run(history, run_id)
        return [_job_json(job) for job in await history.jobs(run.id)]

    @api.get("/runs/{run_id}/logs", dependencies=[Depends(read_access)])
    async def run_logs(
        request: Request, run_id: str, after: int = 0, limit: int = _MAX_LOG_LINES
    ) -> list[dict[str, Any]]:
        """The run's log lines (stored masked) with an id above `after`, oldest first: poll
        with the last id seen to get only new lines."""
        history = _history(request)
        run = await _get_run(history, run_id)
        lines = await history.logs(
            run.id,
            after=max(0, min(after, _MAX_LOG_ID)),
            limit=max(1, min(limit, _MAX_LOG_LINES)),
        )
        return [_line_json(line) for line in lines]

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
