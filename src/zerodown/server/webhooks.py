"""GitHub webhooks: POST /hooks/github queues a pipeline run for a push or a merged pull request.

The body must carry `X-Hub-Signature-256` = HMAC-SHA256 of itself with the secret named by
`pipeline.webhook_secret_env`, compared in constant time; anything unsigned or mis-signed is
refused with 401 before the body is read as JSON. Other events get 400, events that need no run
(a deleted branch, a closed but unmerged pull request) 202 with the reason.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from zerodown.config import LoadedConfig
from zerodown.errors import PipelineError, ZerodownError
from zerodown.pipeline.history import PipelineHistory
from zerodown.pipeline.model import RunRecord
from zerodown.pipeline.runner import PipelineRunner, pipeline_of
from zerodown.pipeline.triggers import spawn_run
from zerodown.pipeline.workspace import git, resolve_commit
from zerodown.store.sql import SqlHistoryStore

router = APIRouter(tags=["pipeline"])
MAX_BODY = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB


@dataclass
class WebhookContext:
    """What the endpoint needs: the config, the history, and how a queued run is started."""

    loaded: LoadedConfig
    store: SqlHistoryStore
    start: Callable[[RunRecord], Awaitable[None]]


def signature_of(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """Constant-time check of the signature header."""
    if not header:
        return False
    return hmac.compare_digest(signature_of(secret, body), header.strip())


@dataclass(frozen=True)
class PushTarget:
    """The branch and commit a webhook asks to run."""

    branch: str
    sha: str
    actor: str


def target_of(event: str, payload: dict[str, Any]) -> PushTarget | str:
    """The run a push / merged pull request asks for, or the reason it needs none."""
    if event == "push":
        ref = str(payload.get("ref", ""))
        if not ref.startswith("refs/heads/"):
            return f"{ref or 'this ref'} is not a branch"
        if payload.get("deleted"):
            return f"branch {ref.removeprefix('refs/heads/')} was deleted"
        pusher = (payload.get("pusher") or {}).get("name") or "github"
        return PushTarget(ref.removeprefix("refs/heads/"), str(payload.get("after", "")), pusher)
    pull = payload.get("pull_request") or {}
    if payload.get("action") != "closed" or not pull.get("merged"):
        return "only merged pull requests run the pipeline"
    merger = (pull.get("merged_by") or {}).get("login") or "github"
    base = str((pull.get("base") or {}).get("ref", ""))
    return PushTarget(base, str(pull.get("merge_commit_sha", "")), merger)


def _context(request: Request) -> WebhookContext:
    given = getattr(request.app.state, "pipeline_webhook", None)
    if isinstance(given, WebhookContext):
        return given
    api = getattr(request.app.state, "api", None)  # the API's app: use its control plane
    plane = getattr(api, "plane", None)
    if plane is None or not isinstance(plane.store, SqlHistoryStore):
        raise HTTPException(503, "the pipeline webhook is not set up on this server")
    loaded = plane.loaded

    async def start(run: RunRecord) -> None:
        spawn_run(loaded, run.id)

    return WebhookContext(loaded, plane.store, start)


@router.post("/hooks/github", status_code=202)
async def github_webhook(request: Request) -> JSONResponse:
    """Queue a pipeline run for a signed push or merged pull_request event."""
    ctx = _context(request)
    try:
        settings = pipeline_of(ctx.loaded)
    except ZerodownError as exc:  # no pipeline here: for GitHub, this hook does not exist
        raise HTTPException(404, str(exc)) from None
    secret = os.environ.get(settings.webhook_secret_env, "")
    if not secret:  # refuse rather than accept unsigned pushes
        raise HTTPException(
            404, f"webhook not configured: set {settings.webhook_secret_env} to its secret"
        )
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPException(413, "payload too large")
    if not signature_ok(secret, body, request.headers.get("X-Hub-Signature-256")):
        raise HTTPException(401, "bad or missing X-Hub-Signature-256")
    event = request.headers.get("X-GitHub-Event", "")
    if event == "ping":
        return JSONResponse({"status": "pong"}, status_code=200)
    if event not in ("push", "pull_request"):
        raise HTTPException(400, f"event {event or '(none)'!r} is not handled: send push events")
    try:
        payload = json.loads(body)
    except ValueError:
        raise HTTPException(400, "the body is not JSON") from None
    target = target_of(event, payload if isinstance(payload, dict) else {})
    if isinstance(target, str):
        return JSONResponse({"status": "ignored", "reason": target}, status_code=202)
    history = PipelineHistory(ctx.store)
    try:
        await _ensure_commit(ctx.loaded, target.sha)
        run = await PipelineRunner(ctx.loaded, history).create(
            branch=target.branch, sha=target.sha, trigger="webhook", actor=target.actor
        )
    except PipelineError as exc:
        raise HTTPException(422, str(exc)) from None
    await ctx.start(run)
    return JSONResponse(
        {"status": "queued", "run": run.id, "environment": run.environment}, status_code=202
    )


async def _ensure_commit(loaded: LoadedConfig, sha: str) -> None:
    """Fetch from `origin` when the pushed commit is not in the project repository yet."""
    try:
        await resolve_commit(loaded.root, sha)
        return
    except PipelineError:
        await git(loaded.root, "fetch", "--quiet", "origin")
    await resolve_commit(loaded.root, sha)
