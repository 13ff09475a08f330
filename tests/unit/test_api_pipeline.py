"""The pipeline routes of the HTTP API (FastAPI TestClient, a real SQLite history): runs, their
jobs and logs (polled with `after`), 404 for unknown runs, approvals need a token."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.unit.fakes import make_loaded
from tests.unit.test_api import FakePlane

from zerodown.config.server import ServerConfig
from zerodown.pipeline.history import PipelineHistory
from zerodown.pipeline.model import JobRecord, JobState, RunRecord, RunState
from zerodown.server.api import create_app
from zerodown.server.auth import TokenStore
from zerodown.store.sql import open_store

pytestmark = pytest.mark.timeout(60)

RUN_ID = "0123456789abcdef0123456789abcdef"
DONE_ID = "fedcba9876543210fedcba9876543210"


@dataclass
class Setup:
    """A TestClient on the app, the pipeline history behind it and a valid token."""

    client: TestClient
    history: PipelineHistory
    auth: dict[str, str]


def _seed(history: PipelineHistory) -> None:
    """A run waiting for approval (two jobs, three log lines) and a finished one."""

    async def seed() -> None:
        waiting = RunRecord(RUN_ID, "main", "a" * 40, "prod", RunState.QUEUED, "push", "dev", 100.0)
        await history.create_run(waiting, now=100.0)
        await history.update_run(RUN_ID, state=RunState.WAITING, started_at=101.0)
        await history.save_job(
            JobRecord(
                RUN_ID,
                "test",
                "test",
                JobState.SUCCEEDED,
                started_at=101.0,
                finished_at=104.5,
                exit_code=0,
                summary={"passed": 12, "failed": 0},
            )
        )
        await history.save_job(JobRecord(RUN_ID, "deploy", "deploy", JobState.PENDING))
        await history.append_logs(
            RUN_ID,
            [("test", 101.5, "collected 12 items"), ("test", 102.0, "token=***")],
        )
        await history.append_logs(RUN_ID, [("test", 104.0, "12 passed")])
        done = RunRecord(DONE_ID, "feature", "b" * 40, None, RunState.QUEUED, "cli", "dev", 50.0)
        await history.create_run(done, now=50.0)
        await history.update_run(
            DONE_ID,
            state=RunState.SUCCEEDED,
            started_at=50.0,
            finished_at=60.0,
            reason="all jobs succeeded",
        )

    asyncio.run(seed())


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    loaded = make_loaded(tmp_path, instances=2)
    store = open_store(f"sqlite:///{tmp_path / 'history.db'}")
    plane = FakePlane(loaded, store)
    token = asyncio.run(TokenStore(store.engine).create("alice"))
    history = PipelineHistory(store)
    _seed(history)
    with TestClient(create_app(plane, settings=ServerConfig())) as client:
        yield Setup(client, history, {"Authorization": f"Bearer {token}"})
    asyncio.run(store.close())


def test_runs_are_listed_newest_first_and_shown_with_their_approvers(setup: Setup) -> None:
    runs = setup.client.get("/api/pipeline/runs").json()
    assert [r["id"] for r in runs] == [RUN_ID, DONE_ID]
    assert (runs[0]["state"], runs[0]["trigger"], runs[0]["environment"]) == (
        "waiting",
        "push",
        "prod",
    )
    assert (runs[1]["duration"], runs[1]["reason"]) == (10.0, "all jobs succeeded")
    shown = setup.client.get(f"/api/pipeline/runs/{RUN_ID[:8]}").json()
    assert (shown["id"], shown["approvers"]) == (RUN_ID, [])


def test_jobs_of_a_run_in_order_with_states_and_summaries(setup: Setup) -> None:
    answer = setup.client.get(f"/api/pipeline/runs/{RUN_ID}/jobs")
    assert answer.status_code == 200
    test, deploy = answer.json()
    assert (test["name"], test["state"], test["exit_code"]) == ("test", "succeeded", 0)
    assert test["duration"] == 3.5 and test["summary"] == {"passed": 12, "failed": 0}
    assert (deploy["name"], deploy["state"], deploy["duration"]) == ("deploy", "pending", None)
    # a unique prefix works like the full id; a finished run without jobs has none
    assert setup.client.get(f"/api/pipeline/runs/{RUN_ID[:6]}/jobs").json()[0]["name"] == "test"
    assert setup.client.get(f"/api/pipeline/runs/{DONE_ID}/jobs").json() == []


def test_logs_are_polled_with_after_and_come_back_as_stored(setup: Setup) -> None:
    url = f"/api/pipeline/runs/{RUN_ID}/logs"
    lines = setup.client.get(url).json()
    assert [line["line"] for line in lines] == ["collected 12 items", "token=***", "12 passed"]
    assert {line["job"] for line in lines} == {"test"}
    ids = [line["id"] for line in lines]
    assert ids == sorted(ids)
    newer = setup.client.get(url, params={"after": ids[0]}).json()
    assert [line["id"] for line in newer] == ids[1:]
    assert setup.client.get(url, params={"after": ids[-1]}).json() == []
    asyncio.run(setup.history.append_logs(RUN_ID, [("deploy", 105.0, "deploying")]))
    [fresh] = setup.client.get(url, params={"after": ids[-1]}).json()
    assert (fresh["job"], fresh["line"]) == ("deploy", "deploying") and fresh["id"] > ids[-1]
    assert len(setup.client.get(url, params={"limit": 2}).json()) == 2
    # out-of-range numbers are clamped, never a database error
    assert setup.client.get(url, params={"after": 2**70}).json() == []
    assert len(setup.client.get(url, params={"after": -5, "limit": 0}).json()) == 1


@pytest.mark.parametrize(
    "path",
    [
        "/api/pipeline/runs/ffffffffffff",
        "/api/pipeline/runs/ffffffffffff/jobs",
        "/api/pipeline/runs/ffffffffffff/logs",
        "/api/pipeline/runs/ab/logs?after=3",  # too short a prefix
    ],
)
def test_an_unknown_run_gets_404(setup: Setup, path: str) -> None:
    answer = setup.client.get(path)
    assert answer.status_code == 404 and "pipeline run" in answer.json()["detail"]


def test_reads_need_a_token_when_the_api_is_closed(tmp_path: Path) -> None:
    loaded = make_loaded(tmp_path, instances=2)
    store = open_store(f"sqlite:///{tmp_path / 'history.db'}")
    token = asyncio.run(TokenStore(store.engine).create("alice"))
    _seed(PipelineHistory(store))
    app = create_app(FakePlane(loaded, store), settings=ServerConfig(read_only_public=False))
    try:
        with TestClient(app) as client:
            for tail in ("jobs", "logs"):
                url = f"/api/pipeline/runs/{RUN_ID}/{tail}"
                assert client.get(url).status_code == 401
                auth = {"Authorization": f"Bearer {token}"}
                assert client.get(url, headers=auth).status_code == 200
    finally:
        asyncio.run(store.close())


def test_an_anonymous_approval_gets_401_and_records_nothing(setup: Setup) -> None:
    url = f"/api/pipeline/runs/{RUN_ID}/approve"
    assert setup.client.post(url).status_code == 401
    wrong = {"Authorization": "Bearer zd_not-a-token"}
    assert setup.client.post(url, headers=wrong).status_code == 401
    assert asyncio.run(setup.history.approvers(RUN_ID)) == []


def test_an_approval_is_recorded_once_per_approver(setup: Setup) -> None:
    url = f"/api/pipeline/runs/{RUN_ID[:8]}/approve"
    first = setup.client.post(url, headers=setup.auth)
    assert first.status_code == 200
    assert first.json() == {"run": RUN_ID, "new": True, "approvers": ["alice"]}
    again = setup.client.post(url, headers=setup.auth).json()
    assert (again["new"], again["approvers"]) == (False, ["alice"])
    assert asyncio.run(setup.history.approvers(RUN_ID)) == ["alice"]
    shown = setup.client.get(f"/api/pipeline/runs/{RUN_ID}").json()
    assert shown["approvers"] == ["alice"]


def test_approving_unknown_or_finished_runs_is_refused(setup: Setup) -> None:
    unknown = setup.client.post("/api/pipeline/runs/ffffffffffff/approve", headers=setup.auth)
    assert unknown.status_code == 404
    ended = setup.client.post(f"/api/pipeline/runs/{DONE_ID}/approve", headers=setup.auth)
    assert ended.status_code == 409 and "has ended" in ended.json()["detail"]
    assert asyncio.run(setup.history.approvers(DONE_ID)) == []
