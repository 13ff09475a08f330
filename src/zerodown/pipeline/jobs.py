"""How each kind of job runs: a command (with live, masked logs), then the kind's own check
(JUnit counts, the scan gate, the migration check, publish, deploy behind approvals)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zerodown.clock import Clock
from zerodown.config import LoadedConfig
from zerodown.config.pipeline import PipelineConfig, PipelineJobConfig, ResolvedGates
from zerodown.engine.extensions import Masker
from zerodown.errors import PipelineError
from zerodown.pipeline.approvals import ApprovalStatus, wait_for_approval
from zerodown.pipeline.artifacts import ArtifactStore
from zerodown.pipeline.history import PipelineHistory
from zerodown.pipeline.model import JobState, RunListener, RunRecord, RunState
from zerodown.pipeline.stages import build, migrations, scan, scanners
from zerodown.pipeline.stages import test as junit
from zerodown.pipeline.stages.deploy import Deployments, deployment_succeeded
from zerodown.pipeline.stages.publish import publish_revision
from zerodown.pipeline.workspace import changed_files, tags_at
from zerodown.shell import run_shell

Notify = Callable[[str, str, str, dict[str, str]], Awaitable[None]]  # kind, severity, text, fields


@dataclass
class JobOutcome:
    """How a job ended."""

    state: JobState
    reason: str | None = None
    exit_code: int | None = None
    command_seconds: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)


class LogWriter:
    """Job output: masked, shown live to the listener, and written to the history in batches
    (a line per transaction would make a chatty test suite slow)."""

    def __init__(
        self,
        history: PipelineHistory,
        run_id: str,
        masker: Masker,
        listener: RunListener,
        clock: Clock,
    ) -> None:
        self.history = history
        self.run_id = run_id
        self.masker = masker
        self.listener = listener
        self.clock = clock
        self._pending: list[tuple[str, float, str]] = []

    def line(self, job: str, text: str) -> None:
        """Take one line of `job`'s output."""
        masked = self.masker.mask(text)
        self._pending.append((job, self.clock.time(), masked))
        self.listener.on_line(job, masked)

    async def flush(self) -> None:
        """Write the lines taken so far."""
        pending, self._pending = self._pending, []
        await self.history.append_logs(self.run_id, pending)

    async def keep_flushing(self, interval: float = 0.25) -> None:
        """Flush every `interval` until cancelled (`pipeline logs -f` follows the table)."""
        while True:
            await self.clock.sleep(interval)
            await self.flush()


@dataclass
class RunSetting:
    """What every job of one run shares."""

    run: RunRecord
    loaded: LoadedConfig
    pipeline: PipelineConfig
    workspace: Path
    gates: ResolvedGates | None  # None: the branch deploys nowhere
    history: PipelineHistory
    clock: Clock
    logs: LogWriter
    deployments: Deployments
    artifacts: ArtifactStore
    notify: Notify
    built: dict[str, build.BuiltArtifact] = field(default_factory=dict)


class JobExecutor:
    """Runs one job of a run by its kind."""

    def __init__(self, setting: RunSetting) -> None:
        self.s = setting

    async def run(self, name: str, job: PipelineJobConfig) -> JobOutcome:
        """Run `job` to its end; failures come back as a failed outcome, not an exception."""
        try:
            handler = getattr(self, f"_{job.kind}")
            outcome: JobOutcome = await handler(name, job)
            return outcome
        except PipelineError as exc:
            return JobOutcome(JobState.FAILED, str(exc))
        except OSError as exc:
            return JobOutcome(JobState.FAILED, f"could not run: {exc}")

    # -- kinds ----------------------------------------------------------------------------------

    async def _command(self, name: str, job: PipelineJobConfig) -> JobOutcome:
        return await self._shell(name, job)

    async def _test(self, name: str, job: PipelineJobConfig) -> JobOutcome:
        outcome = await self._shell(name, job, fail=False)
        reports = junit.find_reports(self._cwd(job), job.junit)
        report = junit.read_reports(reports)
        outcome.summary.update(report.summary())
        if reports:
            self.s.logs.line(name, f"[zerodown] JUnit: {report.describe()}")
        if outcome.exit_code != 0 or not report.ok:
            why = report.describe() if reports else f"exit code {outcome.exit_code}"
            return _failed(outcome, f"tests failed: {why}")
        outcome.state = JobState.SUCCEEDED
        return outcome

    async def _build(self, name: str, job: PipelineJobConfig) -> JobOutcome:
        cached = build.cached_build(self.s.loaded.state_dir, self.s.run.sha, name)
        if cached is not None:
            self.s.built[name] = cached
            self.s.logs.line(name, f"[zerodown] reusing the build of {self.s.run.sha[:10]}")
            return JobOutcome(
                JobState.SUCCEEDED, summary=_artifact_summary(cached), command_seconds=0
            )
        outcome = await self._shell(name, job)
        if outcome.state is not JobState.SUCCEEDED or job.output is None:
            return outcome
        built = await build.pack_output(
            self._cwd(job) / job.output, self.s.loaded.state_dir, self.s.run.sha, name
        )
        self.s.built[name] = built
        outcome.summary.update(_artifact_summary(built))
        self.s.logs.line(name, f"[zerodown] artifact {built.digest} ({built.size} bytes)")
        return outcome

    async def _scan(self, name: str, job: PipelineJobConfig) -> JobOutcome:
        if job.scanner is not None:
            scanned = await self._run_scanner(name, job)
            if isinstance(scanned, JobOutcome):
                return scanned  # the command before it failed, or no advisory data
            outcome, report = scanned
        else:
            # Scanners exit non-zero when they find something; the report and the gate decide.
            outcome = await self._shell(name, job, fail=False)
            assert job.report is not None  # the config model requires it without `scanner:`
            report = scan.read_report(self._cwd(job) / job.report, job.format)
        blocking = report.blocking(job.fail_on)
        outcome.summary.update(
            {"format": report.format, "counts": report.counts(), "fail_on": list(job.fail_on)}
        )
        verdict = report.describe(job.fail_on)
        self.s.logs.line(name, f"[zerodown] scan: {verdict}")
        if blocking:
            outcome.summary["blocking"] = [f"{f.severity} {f.id} {f.where}" for f in blocking[:20]]
            required = self.s.gates.scan_required if self.s.gates else False
            if required:
                return _failed(outcome, f"security scan gate: {verdict}")
            outcome.summary["warning"] = f"scan gate would fail ({verdict}); optional here"
        outcome.state = JobState.SUCCEEDED
        return outcome

    async def _run_scanner(
        self, name: str, job: PipelineJobConfig
    ) -> tuple[JobOutcome, scan.ScanReport] | JobOutcome:
        """Run the job's `command:` (if any, e.g. exporting a lock file), then its built-in
        scanner; a scanner without advisory data fails or warns as `scanner.unreachable` says."""
        assert job.scanner is not None
        if job.command:
            outcome = await self._shell(name, job)
            if outcome.state is not JobState.SUCCEEDED:
                return outcome
        else:
            outcome = JobOutcome(JobState.RUNNING)
        cwd = self._cwd(job)
        self.s.logs.line(name, f"[zerodown] running {job.scanner.tool}")
        found = await scanners.run_scanner(
            job.scanner,
            cwd=cwd,
            report=cwd / (job.report or f".zerodown-scan-{name}.json"),
            env=self._environment(job),
            timeout=job.timeout,
            cache_dir=self.s.loaded.state_dir / "cache" / job.scanner.tool,
            on_line=lambda line: self.s.logs.line(name, line),
        )
        outcome.summary["scanner"] = job.scanner.tool
        if isinstance(found, scanners.Unreachable):
            self.s.logs.line(name, f"[zerodown] scan: {found.reason}")
            if job.scanner.unreachable == "fail":
                return _failed(
                    outcome,
                    f"not scanned: {found.reason} (scanner.unreachable: warn would let the run "
                    "go on unscanned)",
                )
            outcome.summary["warning"] = f"not scanned: {found.reason} (scanner.unreachable: warn)"
            outcome.state = JobState.SUCCEEDED
            return outcome
        if found.audited is not None:
            outcome.summary["audited"] = found.audited
            self.s.logs.line(name, f"[zerodown] {job.scanner.tool}: {found.audited} dependencies")
        if found.skipped:
            outcome.summary["skipped"] = found.skipped[:20]
            self.s.logs.line(
                name,
                f"[zerodown] not audited ({len(found.skipped)}): {'; '.join(found.skipped[:5])}",
            )
        return outcome, found.report

    async def _migrations(self, name: str, job: PipelineJobConfig) -> JobOutcome:
        folder = self._cwd(job) / job.path
        files = migrations.migration_files(folder)
        base = await self._live_revision()
        changed = await changed_files(self.s.loaded.root, base, self.s.run.sha, ".")
        if changed is not None:
            names = {Path(p).name for p in changed}
            files = [f for f in files if f.name in names]
        report = migrations.check_migrations(files, dialect=job.dialect)
        since = f" changed since {base[:10]}" if changed is not None and base else ""
        self.s.logs.line(name, f"[zerodown] checked {len(files)} migration(s){since}")
        for violation in report.violations:
            verdict = "allowed (contract step)" if violation.allowed else "REFUSED"
            self.s.logs.line(name, f"[zerodown] {verdict}: {violation.describe()}")
        summary = report.summary()
        if report.refused:
            first = report.refused[0].describe()
            more = f" (+{len(report.refused) - 1} more)" if len(report.refused) > 1 else ""
            return JobOutcome(
                JobState.FAILED,
                f"destructive migration refused: {first}{more}; mark the file as the contract "
                "step (-- zerodown:contract) once no running release needs the old schema",
                summary=summary,
            )
        return JobOutcome(JobState.SUCCEEDED, summary=summary)

    async def _publish(self, name: str, job: PipelineJobConfig) -> JobOutcome:
        built = next((self.s.built[n] for n in job.needs if n in self.s.built), None)
        if built is None and self.s.built:
            built = next(iter(self.s.built.values()))
        published = await publish_revision(
            self.s.history,
            self.s.artifacts,
            self.s.run,
            built,
            git_tags=await tags_at(self.s.loaded.root, self.s.run.sha),
            now=self.s.clock.time(),
        )
        self.s.logs.line(
            name, f"[zerodown] published {published.digest}: {', '.join(published.tags)}"
        )
        return JobOutcome(
            JobState.SUCCEEDED,
            summary={"digest": published.digest, "tags": published.tags},
        )

    async def _deploy(self, name: str, job: PipelineJobConfig) -> JobOutcome:
        run, gates = self.s.run, self.s.gates
        if run.environment is None or gates is None:
            return JobOutcome(JobState.SKIPPED, f"branch {run.branch} deploys to no environment")
        if gates.approvals or gates.wait_timer:
            await self._approval_gate(name, gates)
        moved = await self.s.history.enter_state(run.id, RunState.DEPLOYING)
        if moved.state is not RunState.DEPLOYING:
            raise PipelineError(moved.cancel_requested or f"run is {moved.state}")
        services = list(job.services or self.s.loaded.config.services)
        deployed: dict[str, str] = {}
        for service in services:
            self.s.logs.line(
                name, f"[zerodown] deploying {service} {run.sha[:10]} to {run.environment}"
            )
            record = await self.s.deployments.deploy(
                service, run.environment, run.sha, f"pipeline:{run.id[:8]}"
            )
            deployed[service] = record.id
            self.s.logs.line(
                name, f"[zerodown] deployment {record.id[:8]}: {record.state} {record.reason or ''}"
            )
            if not deployment_succeeded(record):
                return JobOutcome(
                    JobState.FAILED,
                    f"deployment of {service} {record.state}: {record.reason or 'no reason'}",
                    summary={"deployments": deployed},
                )
        return JobOutcome(JobState.SUCCEEDED, summary={"deployments": deployed})

    async def _approval_gate(self, name: str, gates: ResolvedGates) -> None:
        run = await self.s.history.enter_state(self.s.run.id, RunState.WAITING)
        if run.state is not RunState.WAITING:
            raise PipelineError(run.cancel_requested or f"run is {run.state}")
        announced = False
        needs = [f"{gates.approvals} distinct approval(s)"] if gates.approvals else []
        if gates.wait_timer:
            needs.append(f"a {gates.wait_timer:g} s wait timer (pipeline.environments.wait_timer)")
        self.s.logs.line(
            name, f"[zerodown] before deploying to {run.environment}: {' and '.join(needs)}"
        )

        async def on_status(status: ApprovalStatus) -> None:
            nonlocal announced
            self.s.logs.line(name, f"[zerodown] approval gate: {status.describe()}")
            if not announced and not status.open:
                announced = True
                await self.s.notify(
                    "approval_needed",
                    "warning",
                    f"approve with: zerodown approve {run.id[:8]} ({status.describe()})",
                    {"approvals": f"{len(status.approvers)}/{status.required}"},
                )

        await wait_for_approval(self.s.history, run.id, gates, self.s.clock, on_status=on_status)

    # -- plumbing -------------------------------------------------------------------------------

    def _cwd(self, job: PipelineJobConfig) -> Path:
        return (self.s.workspace / job.cwd).resolve()

    async def _live_revision(self) -> str | None:
        if self.s.run.environment is None:
            return None
        store = self.s.history.store
        for service in self.s.loaded.config.services:
            live = await store.last_successful(service, self.s.run.environment)
            if live is not None:
                return live.revision
        return None

    async def _shell(self, name: str, job: PipelineJobConfig, *, fail: bool = True) -> JobOutcome:
        assert job.command is not None
        result = await run_shell(
            job.command,
            cwd=self._cwd(job),
            env=self._environment(job),
            timeout=job.timeout,
            on_line=lambda line: self.s.logs.line(name, line),
        )
        outcome = JobOutcome(
            JobState.SUCCEEDED if result.ok else JobState.FAILED,
            exit_code=result.exit_code,
            command_seconds=result.seconds,
        )
        if result.timed_out:
            outcome.state = JobState.FAILED
            outcome.reason = f"timed out after {job.timeout:.0f} s"
        elif not result.ok and fail:
            outcome.reason = f"`{job.command}` exited with code {result.exit_code}"
        return outcome

    def _environment(self, job: PipelineJobConfig) -> dict[str, str]:
        run = self.s.run
        env = {
            **os.environ,
            "CI": "true",
            "ZERODOWN_PIPELINE_RUN": run.id,
            "ZERODOWN_BRANCH": run.branch,
            "ZERODOWN_SHA": run.sha,
            "ZERODOWN_ENVIRONMENT": run.environment or "",
        }
        for key, value in run.inputs.items():
            env[f"ZERODOWN_INPUT_{key.upper()}"] = value
        env.update(job.env)
        return env


def _failed(outcome: JobOutcome, reason: str) -> JobOutcome:
    outcome.state = JobState.FAILED
    outcome.reason = outcome.reason or reason
    return outcome


def _artifact_summary(built: build.BuiltArtifact) -> dict[str, Any]:
    return {"digest": built.digest, "size": built.size, "cached": built.cached}
