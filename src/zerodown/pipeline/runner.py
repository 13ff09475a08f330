"""`PipelineRunner`: queue a run for a commit, then run its jobs as a DAG (independent jobs in
parallel up to `max_parallel`), stop on the first failure, and record every job, log line and
decision. A newer commit for the same environment stops the run unless it is deploying."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path

from zerodown.clock import Clock, SystemClock
from zerodown.config import LoadedConfig
from zerodown.config.pipeline import PipelineConfig, PipelineJobConfig
from zerodown.engine.extensions import Masker
from zerodown.errors import ConfigError, PipelineError
from zerodown.pipeline import dag
from zerodown.pipeline.artifacts import ArtifactStore, LocalArtifactStore
from zerodown.pipeline.concurrency import wait_for_slot, watch_for_cancel
from zerodown.pipeline.conditions import ConditionFacts, evaluate
from zerodown.pipeline.history import PipelineHistory
from zerodown.pipeline.jobs import JobExecutor, JobOutcome, LogWriter, RunSetting
from zerodown.pipeline.model import (
    Decision,
    JobRecord,
    JobState,
    NullListener,
    NullNotifier,
    PipelineNotice,
    PipelineNotifier,
    RunListener,
    RunRecord,
    RunState,
)
from zerodown.pipeline.stages.deploy import Deployments, EngineDeployments
from zerodown.pipeline.triggers import environment_for_branch
from zerodown.pipeline.workspace import commit_subject, export_commit, resolve_commit

SKIP_TESTS = "skip_tests"
QUEUE_TIMEOUT = 6 * 3600.0  # a run that waits this long for its environment gives up


def pipeline_of(loaded: LoadedConfig) -> PipelineConfig:
    """The `pipeline:` section, or a `ConfigError` saying to write one."""
    if loaded.config.pipeline is None:
        raise ConfigError(
            "no `pipeline:` section: add jobs (test, build, deploy...) to run a pipeline",
            path=str(loaded.path),
            field="pipeline",
        )
    return loaded.config.pipeline


def default_masker() -> Masker:
    """The process-wide secret masker when the secrets feature is present."""
    try:
        from zerodown.secrets.masking import global_masker
    except ImportError:  # pragma: no cover - the secrets feature ships with zerodown
        from zerodown.pipeline.model import IdentityMasker

        return IdentityMasker()
    return global_masker()


class PipelineRunner:
    """Creates and executes pipeline runs of one zerodown.yml."""

    def __init__(
        self,
        loaded: LoadedConfig,
        history: PipelineHistory,
        *,
        deployments: Deployments | None = None,
        notifier: PipelineNotifier | None = None,
        listener: RunListener | None = None,
        masker: Masker | None = None,
        artifacts: ArtifactStore | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.loaded = loaded
        self.pipeline = pipeline_of(loaded)
        self.history = history
        self.deployments = deployments or EngineDeployments(loaded)
        self.notifier = notifier or NullNotifier()
        self.listener = listener or NullListener()
        self.masker = masker or default_masker()
        self.artifacts = artifacts or LocalArtifactStore(loaded.state_dir / "artifacts")
        self.clock = clock or SystemClock()

    # -- queueing -------------------------------------------------------------------------------

    async def create(
        self,
        *,
        branch: str,
        sha: str | None = None,
        inputs: Mapping[str, str] | None = None,
        trigger: str = "cli",
        actor: str = "unknown",
    ) -> RunRecord:
        """Queue a run of `branch` at `sha` (default: the branch's head); older runs of the same
        environment that are not deploying yet are superseded."""
        given = dict(inputs or {})
        if given.get(SKIP_TESTS, "").lower() == "true" and not self.pipeline.allow_skip_tests:
            raise PipelineError("skip_tests=true is not allowed here (pipeline.allow_skip_tests)")
        commit = await resolve_commit(self.loaded.root, sha or branch)
        now = self.clock.time()
        run = RunRecord(
            id=uuid.uuid4().hex,
            branch=branch,
            sha=commit,
            environment=environment_for_branch(self.loaded.config, branch),
            state=RunState.QUEUED,
            trigger=trigger,
            actor=actor,
            created_at=now,
            inputs=given,
            commit_message=await commit_subject(self.loaded.root, commit),
        )
        await self.history.create_run(run, now=now)
        if run.environment is None:
            await self._decide(run.id, None, "no_deploy", f"branch {branch} deploys nowhere")
        if given.get(SKIP_TESTS, "").lower() == "true":
            await self._decide(
                run.id, None, "emergency_input", f"skip_tests=true given by {actor}: tests skip"
            )
        return run

    # -- running --------------------------------------------------------------------------------

    async def execute(self, run_id: str) -> RunRecord:
        """Run a queued run to its end (waiting for its environment first) and return it."""
        run = await wait_for_slot(
            self.history, run_id, self.clock, timeout=QUEUE_TIMEOUT, on_wait=self._on_wait
        )
        if run.state.terminal:
            return run
        await self._notice(run, "pipeline_started", "info", f"{run.branch} {run.sha[:10]} started")
        workspace = self.loaded.state_dir / "pipeline" / "work" / run.id
        logs = LogWriter(self.history, run.id, self.masker, self.listener, self.clock)
        flusher = asyncio.create_task(logs.keep_flushing())
        try:
            state, reason = await self._run_jobs(run, workspace, logs)
        except PipelineError as exc:
            state, reason = RunState.FAILED, str(exc)
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await logs.flush()
            await asyncio.to_thread(shutil.rmtree, workspace, True)
        run = await self.history.update_run(
            run.id, state=state, reason=reason, finished_at=self.clock.time()
        )
        await self._announce_end(run)
        return run

    async def _run_jobs(
        self, run: RunRecord, workspace: Path, logs: LogWriter
    ) -> tuple[RunState, str | None]:
        gates = self.pipeline.gates(run.environment) if run.environment else None
        jobs = self.pipeline.jobs
        skipped = await self._plan_skips(run, jobs)
        if gates is not None and gates.scan_required:
            scans = [n for n, j in jobs.items() if j.kind == "scan" and n not in skipped]
            if not scans:
                why = f"{run.environment} requires a security scan and this run has none"
                await self._decide(run.id, None, "gate_refused", why)
                return RunState.FAILED, why
        await export_commit(self.loaded.root, run.sha, workspace)
        setting = RunSetting(
            run=run,
            loaded=self.loaded,
            pipeline=self.pipeline,
            workspace=workspace,
            gates=gates,
            history=self.history,
            clock=self.clock,
            logs=logs,
            deployments=self.deployments,
            artifacts=self.artifacts,
            notify=lambda kind, sev, text, fields: self._notice(run, kind, sev, text, fields),
        )
        return await self._walk(run, jobs, skipped, JobExecutor(setting))

    async def _plan_skips(
        self, run: RunRecord, jobs: Mapping[str, PipelineJobConfig]
    ) -> dict[str, str]:
        facts = ConditionFacts(run.branch, run.environment, run.sha, run.trigger, run.inputs)
        skip_tests = run.inputs.get(SKIP_TESTS, "").lower() == "true"
        skipped: dict[str, str] = {}
        for name, job in jobs.items():
            if not evaluate(job.condition, facts):
                skipped[name] = f"if: {job.condition} is false"
            elif skip_tests and job.kind == "test":
                skipped[name] = "skipped by the emergency input skip_tests=true"
            elif job.kind == "deploy" and run.environment is None:
                skipped[name] = f"branch {run.branch} deploys to no environment"
        return skipped

    async def _walk(
        self,
        run: RunRecord,
        jobs: Mapping[str, PipelineJobConfig],
        skipped: dict[str, str],
        executor: JobExecutor,
    ) -> tuple[RunState, str | None]:
        needs = {name: job.needs for name, job in jobs.items()}
        succeeded: set[str] = set()
        finished: set[str] = set()
        running: dict[asyncio.Task[JobOutcome], str] = {}
        started: dict[str, float] = {}
        failure: str | None = None
        # A skipped job counts as satisfied for the jobs after it (like `if:` in GitHub).
        for name, why in skipped.items():
            await self._save(run, name, jobs[name].kind, JobOutcome(JobState.SKIPPED, why), started)
            await self._decide(run.id, name, "skipped", why)
            succeeded.add(name)
            finished.add(name)
        watcher = asyncio.create_task(watch_for_cancel(self.history, run.id, self.clock))
        cancelled: str | None = None
        try:
            while len(finished) < len(jobs):
                if failure is None and cancelled is None:
                    for name in dag.runnable(
                        needs,
                        succeeded=succeeded,
                        running=running.values(),
                        finished=finished,
                        limit=self.pipeline.max_parallel,
                    ):
                        await self._save(
                            run, name, jobs[name].kind, JobOutcome(JobState.RUNNING), started
                        )
                        running[asyncio.create_task(executor.run(name, jobs[name]))] = name
                if not running:
                    break
                waiting_on: list[asyncio.Task[JobOutcome] | asyncio.Task[str]] = [*running]
                if cancelled is None:  # once it fired, only the jobs left (a deploy) matter
                    waiting_on.append(watcher)
                done, _ = await asyncio.wait(waiting_on, return_when=asyncio.FIRST_COMPLETED)
                if watcher in done and cancelled is None:
                    cancelled = watcher.result()
                    self._stop_jobs(running, jobs)
                for task in [t for t in running if t in done]:
                    name = running.pop(task)
                    outcome = _outcome_of(task, cancelled or failure)
                    await self._save(run, name, jobs[name].kind, outcome, started)
                    finished.add(name)
                    if outcome.state is JobState.SUCCEEDED:
                        succeeded.add(name)
                    elif failure is None and cancelled is None and outcome.state is JobState.FAILED:
                        # A job that stopped because the run was cancelled (the approval gate
                        # sees it first) ends the run as cancelled, not failed.
                        cancelled = (await self.history.get_run(run.id)).cancel_requested
                        if cancelled is not None:
                            watcher.cancel()
                            self._stop_jobs(running, jobs)
                            continue
                        failure = f"job {name} failed: {outcome.reason}"
                        await self._decide(run.id, name, "stopped", failure)
                        self._stop_jobs(running, jobs)
        finally:
            watcher.cancel()
            for task in running:
                task.cancel()
        for name in jobs:
            if name not in finished:
                why = cancelled or "not run: an earlier job failed"
                await self._save(
                    run, name, jobs[name].kind, JobOutcome(JobState.SKIPPED, why), started
                )
        if cancelled is not None and failure is None:
            state = (
                RunState.SUPERSEDED if cancelled.startswith("superseded") else RunState.CANCELLED
            )
            return state, cancelled
        return (RunState.FAILED, failure) if failure else (RunState.SUCCEEDED, None)

    @staticmethod
    def _stop_jobs(
        running: dict[asyncio.Task[JobOutcome], str], jobs: Mapping[str, PipelineJobConfig]
    ) -> None:
        """Cancel running jobs, except deploys: a deploy in flight always runs to its end."""
        for task, name in running.items():
            if jobs[name].kind != "deploy":
                task.cancel()

    async def _save(
        self, run: RunRecord, name: str, kind: str, outcome: JobOutcome, started: dict[str, float]
    ) -> None:
        now = self.clock.time()
        if outcome.state is JobState.RUNNING:
            started[name] = now
        job = JobRecord(
            run_id=run.id,
            name=name,
            kind=kind,
            state=outcome.state,
            started_at=started.get(name),
            finished_at=None if outcome.state is JobState.RUNNING else now,
            exit_code=outcome.exit_code,
            command_seconds=outcome.command_seconds,
            summary=outcome.summary,
            reason=outcome.reason,
        )
        await self.history.save_job(job)
        self.listener.on_job(job)

    # -- decisions and notices -----------------------------------------------------------------

    async def _decide(self, run_id: str, job: str | None, decision: str, reason: str) -> None:
        record = Decision(run_id, job, self.clock.time(), decision, self.masker.mask(reason))
        await self.history.add_decision(record)
        self.listener.on_decision(record)

    async def _on_wait(self, holder: RunRecord) -> None:
        run_env = holder.environment or "?"
        await self._decide(holder.id, None, "holds_environment", f"a newer run waits for {run_env}")

    async def _announce_end(self, run: RunRecord) -> None:
        kinds = {
            RunState.SUCCEEDED: ("pipeline_succeeded", "info"),
            RunState.FAILED: ("pipeline_failed", "critical"),
            RunState.CANCELLED: ("pipeline_cancelled", "warning"),
            RunState.SUPERSEDED: ("pipeline_superseded", "info"),
        }
        kind, severity = kinds.get(run.state, ("pipeline_failed", "critical"))
        text = f"{run.branch} {run.sha[:10]}: {run.state}" + (
            f": {run.reason}" if run.reason else ""
        )
        fields = {}
        for job in await self.history.jobs(run.id):
            if job.kind == "test" and "tests" in job.summary:
                failing = job.summary.get("failed_tests") or []
                fields["tests"] = f"{job.summary['passed']}/{job.summary['tests']} passed"
                if failing:
                    fields["failing tests"] = ", ".join(failing[:5])
        await self._notice(run, kind, severity, text, fields)

    async def _notice(
        self,
        run: RunRecord,
        kind: str,
        severity: str,
        text: str,
        fields: dict[str, str] | None = None,
    ) -> None:
        all_fields = {"branch": run.branch, "commit": run.sha[:10], **(fields or {})}
        if run.environment:
            all_fields["environment"] = run.environment
        notice = PipelineNotice(
            kind=kind,
            severity=severity,
            run=run,
            title=f"pipeline {run.id[:8]} {kind.removeprefix('pipeline_').replace('_', ' ')}",
            text=self.masker.mask(text),
            fields={k: self.masker.mask(v) for k, v in all_fields.items()},
        )
        try:
            await self.notifier.notify(notice)
        except Exception as exc:  # a notifier must never fail the pipeline
            await self._decide(run.id, None, "notify_failed", f"{kind}: {exc}")


def _outcome_of(task: asyncio.Task[JobOutcome], why: str | None) -> JobOutcome:
    if task.cancelled():
        return JobOutcome(JobState.CANCELLED, f"stopped: {why or 'cancelled'}")
    error = task.exception()
    if error is not None:
        return JobOutcome(JobState.FAILED, f"unexpected error: {type(error).__name__}: {error}")
    return task.result()
