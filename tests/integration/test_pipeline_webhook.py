"""POST /hooks/github: signature checked in constant time, push and merged PRs queue a run,
anything else is refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from tests.integration.pipeline_fixtures import free_port, git, make_pipeline_repo

from zerodown.config import load_config
from zerodown.pipeline.model import RunRecord, RunState
from zerodown.server.webhooks import WebhookContext, router, signature_of
from zerodown.store.sql import open_store

SECRET = "s3cret-for-tests"


@pytest.fixture
def client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, list[RunRecord], str]]:
    monkeypatch.setenv("ZERODOWN_WEBHOOK_SECRET", SECRET)
    repo = make_pipeline_repo(tmp_path, free_port())
    loaded = load_config(repo / "zerodown.yml")
    store = open_store(loaded.store_url)
    started: list[RunRecord] = []

    async def start(run: RunRecord) -> None:
        started.append(run)

    app = FastAPI()
    app.include_router(router)
    app.state.pipeline_webhook = WebhookContext(loaded, store, start)
    with TestClient(app) as test_client:
        yield test_client, started, git(repo, "rev-parse", "HEAD")
    asyncio.run(store.close())


def _post(client: TestClient, event: str, payload: dict[str, object], *, secret: str = SECRET):  # type: ignore[no-untyped-def]
    body = json.dumps(payload).encode()
    headers = {
        "X-GitHub-Event": event,
        "X-Hub-Signature-256": signature_of(secret, body),
        "Content-Type": "application/json",
    }
    return client.post("/hooks/github", content=body, headers=headers)


def test_a_bad_signature_is_refused(client: tuple[TestClient, list[RunRecord], str]) -> None:
    test_client, started, sha = client
    answer = _post(test_client, "push", {"ref": "refs/heads/main", "after": sha}, secret="wrong")
    assert answer.status_code == 401
    unsigned = test_client.post("/hooks/github", content=b"{}", headers={"X-GitHub-Event": "push"})
    assert unsigned.status_code == 401
    assert started == []


def test_a_signed_push_queues_a_run_for_the_branch(
    client: tuple[TestClient, list[RunRecord], str],
) -> None:
    test_client, started, sha = client
    answer = _post(
        test_client, "push", {"ref": "refs/heads/main", "after": sha, "pusher": {"name": "kim"}}
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["environment"] == "prod"
    assert [(r.branch, r.sha, r.trigger, r.actor, r.state) for r in started] == [
        ("main", sha, "webhook", "kim", RunState.QUEUED)
    ]


def test_only_merged_pull_requests_queue_a_run(
    client: tuple[TestClient, list[RunRecord], str],
) -> None:
    test_client, started, sha = client
    pull = {"merged": False, "base": {"ref": "develop"}, "merge_commit_sha": sha}
    ignored = _post(test_client, "pull_request", {"action": "closed", "pull_request": pull})
    assert ignored.status_code == 202 and ignored.json()["status"] == "ignored"
    merged = {**pull, "merged": True, "merged_by": {"login": "lee"}}
    queued = _post(test_client, "pull_request", {"action": "closed", "pull_request": merged})
    assert queued.status_code == 202 and queued.json()["environment"] == "dev"
    assert [r.branch for r in started] == ["develop"]


def test_other_events_are_refused(client: tuple[TestClient, list[RunRecord], str]) -> None:
    test_client, started, _ = client
    assert _post(test_client, "issues", {"action": "opened"}).status_code == 400
    assert _post(test_client, "ping", {"zen": "hi"}).status_code == 200
    assert started == []
