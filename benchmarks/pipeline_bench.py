"""Pipeline overhead: a run's wall time minus the time of the user's own commands, for the
example app (goal <= 2 s; the seeds' GitHub Actions pipeline takes 25-35 minutes).

The pipeline is the e2e one (test with JUnit, scan, migrations, build, publish, deploy) with
jobs one at a time, so "the user's commands" is simply the sum of their durations. The deploy
goes through a no-op `Deployments` seam: the deploy engine has a benchmark of its own.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.machine import MachineFacts
from benchmarks.report import Section, Table
from zerodown.config import load_config
from zerodown.domain.events import DeploymentState
from zerodown.domain.records import DeploymentRecord
from zerodown.pipeline.history import PipelineHistory
from zerodown.pipeline.model import RunState
from zerodown.pipeline.runner import PipelineRunner
from zerodown.store.sql import open_store

GOAL_SECONDS = 2.0
APP = Path(__file__).resolve().parents[1] / "examples" / "webapp" / "app.py"
TEST = (
    "import pathlib; pathlib.Path('reports').mkdir(exist_ok=True); "
    "pathlib.Path('reports/junit.xml').write_text("
    '\'<testsuite><testcase classname="t" name="a"/></testsuite>\')'
)
SCAN = (
    "import json, pathlib; pathlib.Path('scan.json').write_text("
    "json.dumps({'SchemaVersion': 2, 'Results': []}))"
)


class NoDeploy:
    """`Deployments` that succeeds at once (the engine is measured by the deploy benchmark)."""

    async def deploy(
        self, service: str, environment: str, revision: str, actor: str
    ) -> DeploymentRecord:
        """Say the deployment succeeded."""
        return DeploymentRecord(
            id="bench",
            service=service,
            environment=environment,
            revision=revision,
            strategy="all-at-once",
            state=DeploymentState.SUCCEEDED,
            actor=actor,
            created_at=time.time(),
        )


def _git(repo: Path, *args: str) -> None:
    identity = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b"}
    env = {**os.environ, **identity, "GIT_COMMITTER_EMAIL": "b@b"}
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def make_repository(root: Path) -> Path:
    """The example app with a pipeline whose jobs run one at a time."""
    repo = root / "app"
    (repo / "services" / "web").mkdir(parents=True)
    (repo / "db" / "migration").mkdir(parents=True)
    shutil.copy(APP, repo / "services" / "web" / "app.py")
    (repo / "db" / "migration" / "V1__init.sql").write_text("CREATE TABLE t (id INT);\n")
    (repo / ".gitignore").write_text(".zerodown/\n")
    (repo / "ci").mkdir()
    (repo / "ci" / "test.py").write_text(TEST + "\n")
    (repo / "ci" / "scan.py").write_text(SCAN + "\n")
    py = sys.executable
    (repo / "zerodown.yml").write_text(
        textwrap.dedent(
            f"""\
            services:
              web: {{source: {{repo: ., path: services/web}}, run: {py} app.py}}
            environments:
              dev: {{branch: main, strategy: {{type: all-at-once}}}}
            pipeline:
              max_parallel: 1
              jobs:
                test: {{kind: test, command: {py} ci/test.py, junit: [reports/*.xml]}}
                scan: {{kind: scan, command: {py} ci/scan.py, report: scan.json}}
                migrations: {{kind: migrations, path: db/migration}}
                build:
                  kind: build
                  needs: [test]
                  command: mkdir -p dist && cp services/web/app.py dist/
                  output: dist
                publish: {{kind: publish, needs: [build, scan, migrations]}}
                deploy: {{kind: deploy, needs: [publish]}}
            """
        )
    )
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "v1")
    return repo


async def measure(repeats: int) -> tuple[list[float], list[float], list[float]]:
    """(wall seconds, user-command seconds, overhead seconds) of `repeats` runs, each on a new
    commit (so the build is never a cache hit)."""
    walls, commands, overheads = [], [], []
    with tempfile.TemporaryDirectory(prefix="zerodown-pipeline-bench-") as tmp:
        repo = make_repository(Path(tmp))
        loaded = load_config(repo / "zerodown.yml")
        store = open_store(loaded.store_url)
        try:
            runner = PipelineRunner(loaded, PipelineHistory(store), deployments=NoDeploy())
            for n in range(repeats):
                (repo / "services" / "web" / "VERSION").write_text(f"v{n}\n")
                _git(repo, "add", "-A")
                _git(repo, "commit", "-q", "-m", f"v{n}")
                started = time.perf_counter()
                run = await runner.execute((await runner.create(branch="main")).id)
                wall = time.perf_counter() - started
                if run.state is not RunState.SUCCEEDED:
                    raise RuntimeError(f"benchmark run failed: {run.reason}")
                jobs = await runner.history.jobs(run.id)
                used = sum(j.command_seconds or 0.0 for j in jobs)
                walls.append(wall)
                commands.append(used)
                overheads.append(wall - used)
        finally:
            await store.close()
    return walls, commands, overheads


async def run(*, quick: bool, machine: MachineFacts) -> Section:
    """Pipeline overhead over several runs of the example app's pipeline."""
    started = datetime.now(UTC)
    repeats = 3 if quick else 10
    walls, commands, overheads = await measure(repeats)
    worst = max(overheads)
    return Section(
        key="pipeline",
        title="Pipeline: overhead of a run",
        goal=f"run wall time minus the user's own commands <= {GOAL_SECONDS:.0f} s",
        met=worst <= GOAL_SECONDS,
        tables=(
            Table(
                caption=(
                    f"{repeats} runs of test -> scan -> migrations -> build -> publish -> "
                    "deploy (no-op), one job at a time, each on a new commit."
                ),
                headers=("figure", "median", "worst"),
                rows=(
                    ("run wall time", _s(statistics.median(walls)), _s(max(walls))),
                    ("user's commands", _s(statistics.median(commands)), _s(max(commands))),
                    ("overhead", _s(statistics.median(overheads)), _s(worst)),
                ),
            ),
        ),
        limits=(
            "Per run: queueing and the slot claim (SQLite write transactions), checking out "
            "the commit with git archive, a store write per job state, batched log writes, "
            "packing and hashing the build output, and one-way polling (0.2-0.3 s) for the "
            "environment slot and cancel requests.",
        ),
        measured_at=started,
        measured_on=machine.one_line() + (" (quick run)" if quick else ""),
        method="PipelineRunner in-process on a temporary git repository and SQLite history; "
        "wall time with perf_counter around create + execute; the user's commands are the "
        "jobs' own command durations as the runner recorded them.",
    )


def _s(seconds: float) -> str:
    return f"{seconds:.2f} s"
