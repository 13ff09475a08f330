"""Pipeline runs on a real git repository with real job commands, deploying through a fake
`Deployments` seam: gates, failures, supersede, emergency input, masking."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.integration.pipeline_fixtures import commit, free_port, git, make_pipeline_repo

from zerodown.config import load_config
from zerodown.domain.events import DeploymentState
from zerodown.domain.records import DeploymentRecord
from zerodown.pipeline.approvals import approve
from zerodown.pipeline.history import PipelineHistory
from zerodown.pipeline.model import JobState, PipelineNotice, RunRecord, RunState
from zerodown.pipeline.runner import PipelineRunner
from zerodown.store.sql import SqlHistoryStore, open_store

WAIT_STEPS = 400  # x 0.05 s: the longest a test waits for a run to reach a state


@dataclass
class FakeDeployments:
    """Records each deploy and says it succeeded."""

    deployed: list[tuple[str, str, str]] = field(default_factory=list)

    async def deploy(
        self, service: str, environment: str, revision: str, actor: str
    ) -> DeploymentRecord:
        self.deployed.append((service, environment, revision))
        now = time.time()
        return DeploymentRecord(
            id=f"d{len(self.deployed)}",
            service=service,
            environment=environment,
            revision=revision,
            strategy="rolling",
            state=DeploymentState.SUCCEEDED,
            actor=actor,
            created_at=now,
        )


@dataclass
class Notices:
    """A notifier that keeps what it is told."""

    got: list[PipelineNotice] = field(default_factory=list)

    async def notify(self, notice: PipelineNotice) -> None:
        self.got.append(notice)

    def kinds(self, run_id: str) -> list[str]:
        return [n.kind for n in self.got if n.run.id == run_id]


class Masker:
    def mask(self, text: str) -> str:
        return text.replace("2 tests ran", "****")


@dataclass
class Setup:
    repo: Path
    history: PipelineHistory
    runner: PipelineRunner
    deployments: FakeDeployments
    notices: Notices


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    repo = make_pipeline_repo(tmp_path, free_port())
    loaded = load_config(repo / "zerodown.yml")
    store: SqlHistoryStore = open_store(loaded.store_url)
    history = PipelineHistory(store)
    deployments, notices = FakeDeployments(), Notices()
    runner = PipelineRunner(
        loaded, history, deployments=deployments, notifier=notices, masker=Masker()
    )
    yield Setup(repo, history, runner, deployments, notices)
    await store.close()


async def _until(history: PipelineHistory, run_id: str, state: RunState) -> RunRecord:
    for _ in range(WAIT_STEPS):
        run = await history.get_run(run_id)
        if run.state is state:
            return run
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached {state}")


async def test_main_waits_for_two_distinct_approvers_then_deploys_to_prod(setup: Setup) -> None:
    run = await setup.runner.create(branch="main", actor="dev")
    assert run.environment == "prod"
    task = asyncio.create_task(setup.runner.execute(run.id))
    await _until(setup.history, run.id, RunState.WAITING)
    assert setup.deployments.deployed == []
    await approve(setup.history, run.id, "alice", now=time.time())
    added, approvers = await approve(setup.history, run.id, "alice", now=time.time())
    assert not added and approvers == ["alice"]
    await approve(setup.history, run.id, "bob", now=time.time())
    final = await task
    assert final.state is RunState.SUCCEEDED, final.reason
    assert setup.deployments.deployed == [("web", "prod", run.sha)]
    jobs = {j.name: j for j in await setup.history.jobs(run.id)}
    assert all(j.state is JobState.SUCCEEDED for j in jobs.values())
    assert jobs["test"].summary["tests"] == 2
    assert "latest" in jobs["publish"].summary["tags"]
    kinds = setup.notices.kinds(run.id)
    assert kinds == ["pipeline_started", "approval_needed", "pipeline_succeeded"]


async def test_a_failing_test_never_deploys_and_names_the_test(setup: Setup) -> None:
    commit(setup.repo, "break login", {"FAIL_TEST": "1"}, branch="develop")
    run = await setup.runner.execute((await setup.runner.create(branch="develop")).id)
    assert run.state is RunState.FAILED
    assert "tests.test_app.test_login" in (run.reason or "")
    assert setup.deployments.deployed == []
    failed = next(n for n in setup.notices.got if n.kind == "pipeline_failed")
    assert failed.fields["failing tests"] == "tests.test_app.test_login"
    jobs = {j.name: j.state for j in await setup.history.jobs(run.id)}
    assert jobs["deploy"] is JobState.SKIPPED and jobs["build"] is JobState.SKIPPED


async def test_a_destructive_migration_is_refused_with_the_statement_named(setup: Setup) -> None:
    commit(
        setup.repo,
        "drop email",
        {"db/migration/V2__drop_email.sql": "\nALTER TABLE users DROP COLUMN email;\n"},
        branch="develop",
    )
    run = await setup.runner.execute((await setup.runner.create(branch="develop")).id)
    assert run.state is RunState.FAILED
    assert "V2__drop_email.sql:2: drop_column: ALTER TABLE users DROP COLUMN email" in (
        run.reason or ""
    )
    assert setup.deployments.deployed == []


async def test_a_contract_step_migration_passes(setup: Setup) -> None:
    sql = "-- zerodown:contract\nALTER TABLE users DROP COLUMN email;\n"
    commit(setup.repo, "contract", {"db/migration/V2__drop_email.sql": sql}, branch="develop")
    run = await setup.runner.execute((await setup.runner.create(branch="develop")).id)
    assert run.state is RunState.SUCCEEDED, run.reason


async def test_a_newer_commit_supersedes_older_runs_and_only_it_deploys(setup: Setup) -> None:
    first = await setup.runner.create(branch="main")
    running = asyncio.create_task(setup.runner.execute(first.id))
    await _until(setup.history, first.id, RunState.WAITING)
    second_sha = commit(setup.repo, "v2", {"services/web/VERSION": "v2\n"})
    second = await setup.runner.create(branch="main")
    third_sha = commit(setup.repo, "v3", {"services/web/VERSION": "v3\n"})
    third = await setup.runner.create(branch="main")  # `second` is still queued: ends at once
    assert (await setup.history.get_run(second.id)).state is RunState.SUPERSEDED
    assert second.sha == second_sha
    ended = await running
    assert ended.state is RunState.SUPERSEDED and third.id[:8] in (ended.reason or "")
    latest = asyncio.create_task(setup.runner.execute(third.id))
    await _until(setup.history, third.id, RunState.WAITING)
    for who in ("alice", "bob"):
        await approve(setup.history, third.id, who, now=time.time())
    assert (await latest).state is RunState.SUCCEEDED
    assert setup.deployments.deployed == [("web", "prod", third_sha)]


async def test_the_scan_gate_blocks_prod_but_only_warns_on_dev(setup: Setup) -> None:
    commit(setup.repo, "vulnerable dep", {"VULNERABLE": "1"}, branch="develop")
    dev = await setup.runner.execute((await setup.runner.create(branch="develop")).id)
    assert dev.state is RunState.SUCCEEDED
    scan = {j.name: j for j in await setup.history.jobs(dev.id)}["scan"]
    assert "optional here" in scan.summary["warning"]
    commit(setup.repo, "vulnerable dep", {"VULNERABLE": "1"}, branch="main")
    prod = await setup.runner.execute((await setup.runner.create(branch="main")).id)
    assert prod.state is RunState.FAILED
    assert "security scan gate: 1 CRITICAL" in (prod.reason or "")
    assert setup.deployments.deployed == [("web", "dev", dev.sha)]


async def test_skip_tests_is_a_recorded_emergency_input(setup: Setup) -> None:
    commit(setup.repo, "hotfix with a broken test", {"FAIL_TEST": "1"}, branch="develop")
    run = await setup.runner.create(branch="develop", inputs={"skip_tests": "true"}, actor="oncall")
    final = await setup.runner.execute(run.id)
    assert final.state is RunState.SUCCEEDED
    assert final.inputs == {"skip_tests": "true"}
    decisions = [(d.decision, d.reason) for d in await setup.history.decisions(run.id)]
    assert ("emergency_input", "skip_tests=true given by oncall: tests skip") in decisions
    jobs = {j.name: j.state for j in await setup.history.jobs(run.id)}
    assert jobs["test"] is JobState.SKIPPED


async def test_job_logs_are_stored_masked(setup: Setup) -> None:
    run = await setup.runner.execute((await setup.runner.create(branch="develop")).id)
    lines = [line.line for line in await setup.history.logs(run.id) if line.job == "test"]
    assert "****" in lines and "2 tests ran" not in lines


async def test_a_branch_without_an_environment_runs_jobs_but_never_deploys(setup: Setup) -> None:
    commit(setup.repo, "feature", {"feature.txt": "x"}, branch="main")

    git(setup.repo, "checkout", "-q", "-b", "feature/x")
    run = await setup.runner.execute((await setup.runner.create(branch="feature/x")).id)
    assert run.environment is None and run.state is RunState.SUCCEEDED
    jobs = {j.name: j for j in await setup.history.jobs(run.id)}
    assert jobs["deploy"].state is JobState.SKIPPED
    assert setup.deployments.deployed == []
