"""End to end: `git push` to a remote zerodown serves runs the whole pipeline, deploying with
the real engine, router and processes; notifications reach a local HTTP receiver."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.integration.notify_fixtures import Receiver, receiver
from tests.integration.pipeline_fixtures import commit, free_port, git, make_pipeline_repo

from zerodown.config import load_config
from zerodown.config.routes import environment_listen
from zerodown.control_plane import ControlPlane
from zerodown.domain.events import DeploymentState
from zerodown.loadgen import LoadSpec, run_load
from zerodown.pipeline.history import PipelineHistory
from zerodown.pipeline.model import RunRecord, RunState
from zerodown.store.sql import open_store

pytestmark = pytest.mark.slow
RUN_WAIT_STEPS = 1200  # x 0.1 s: the longest a run may take here


def _zerodown(repo: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "zerodown", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _with_notifications(repo: Path, url: str) -> None:
    text = (repo / "zerodown.yml").read_text()
    text += (
        "notifications:\n"
        "  channels:\n"
        f"    ci: {{type: webhook, url: '{url}', secret: '${{env:CI_HOOK_SECRET}}'}}\n"
        "  routes:\n"
        "    - {kinds: [pipeline_started, approval_needed, pipeline_succeeded, "
        "pipeline_failed], channel: ci}\n"
    )
    (repo / "zerodown.yml").write_text(text)
    git(repo, "commit", "-q", "-am", "notify the CI channel")


async def _run_of(history: PipelineHistory, branch: str, sha: str, state: RunState) -> RunRecord:
    for _ in range(RUN_WAIT_STEPS):
        runs = [r for r in await history.list_runs(limit=50) if r.branch == branch and r.sha == sha]
        if runs and (runs[0].state is state or runs[0].state.terminal):
            return runs[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {state} run of {branch} {sha[:10]}")


@pytest.fixture
async def project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Path, int, Receiver]]:
    monkeypatch.setenv("CI_HOOK_SECRET", "hook-secret")  # the pushes' hooks inherit it
    port = free_port()
    repo = make_pipeline_repo(tmp_path, port)
    async with receiver() as got:
        _with_notifications(repo, got.url())
        git(repo, "branch", "-f", "develop", "main")
        _zerodown(repo, "remote", "add", "box")
        git(repo, "remote", "add", "box", str(repo / ".zerodown" / "remotes" / "box.git"))
        try:
            yield repo, port, got
        finally:
            loaded = load_config(repo / "zerodown.yml")
            plane = await ControlPlane.open(loaded, recover=False)
            await plane.stop_everything()
            await plane.close()


async def test_push_to_develop_deploys_to_dev_all_at_once(
    project: tuple[Path, int, Receiver],
) -> None:
    repo, _, _ = project
    sha = git(repo, "rev-parse", "develop")
    git(repo, "push", "-q", "box", "develop")
    store = open_store(load_config(repo / "zerodown.yml").store_url)
    try:
        run = await _run_of(PipelineHistory(store), "develop", sha, RunState.SUCCEEDED)
        assert run.state is RunState.SUCCEEDED, run.reason
        assert (run.environment, run.trigger) == ("dev", "push")
        live = await store.last_successful("web", "dev")
        assert live is not None and live.revision == sha and live.strategy == "all-at-once"
    finally:
        await store.close()


async def test_push_to_main_tests_scans_publishes_waits_for_two_approvals_and_rolls_out(
    project: tuple[Path, int, Receiver],
) -> None:
    repo, _, got = project
    loaded = load_config(repo / "zerodown.yml")
    prod = environment_listen(loaded.config, "prod")[0]  # prod's own router address
    store = open_store(loaded.store_url)
    history = PipelineHistory(store)
    try:
        first = git(repo, "rev-parse", "main")
        git(repo, "push", "-q", "box", "main")
        await _approve_and_finish(repo, history, first)
        stop = asyncio.Event()
        load = asyncio.create_task(
            run_load(LoadSpec(url=f"http://{prod}", connections=4, max_seconds=120), stop)
        )
        second = commit(repo, "v2", {"services/web/VERSION": "v2\n"})
        git(repo, "push", "-q", "box", "main")
        run = await _approve_and_finish(repo, history, second)
        stop.set()
        report = await load
        assert report.failed == 0, report.failures
        assert report.versions["v2"] > 0
        live = await store.last_successful("web", "prod")
        assert live is not None and live.revision == second and live.strategy == "rolling"
        jobs = {j.name: j.state.value for j in await history.jobs(run.id)}
        assert set(jobs.values()) == {"succeeded"}
        kinds = [r.json().get("kind") for r in await got.wait_for(6)]
        assert kinds.count("approval_needed") == 2 and kinds.count("pipeline_succeeded") == 2
    finally:
        await store.close()


async def _approve_and_finish(repo: Path, history: PipelineHistory, sha: str) -> RunRecord:
    waiting = await _run_of(history, "main", sha, RunState.WAITING)
    assert waiting.state is RunState.WAITING, waiting.reason
    assert waiting.environment == "prod"
    _zerodown(repo, "approve", waiting.id[:8], "--as", "alice")
    _zerodown(repo, "approve", waiting.id[:8], "--as", "bob")
    done = await _run_of(history, "main", sha, RunState.SUCCEEDED)
    assert done.state is RunState.SUCCEEDED, done.reason
    deployment = await history.store.last_successful("web", "prod")
    assert deployment is not None and deployment.state is DeploymentState.SUCCEEDED
    return done
