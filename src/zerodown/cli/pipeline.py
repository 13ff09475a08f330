"""Pipeline commands: `zerodown pipeline run|list|show|logs|cancel`, `zerodown approve RUN`,
`zerodown remote add NAME`, `zerodown artifacts list|prune`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape

from zerodown.cli.console import lazy_console
from zerodown.errors import ConfigError
from zerodown.pipeline.model import JobState

if TYPE_CHECKING:  # imported where used, so that the CLI starts fast
    from zerodown.config import LoadedConfig
    from zerodown.pipeline.artifacts import ArtifactInfo
    from zerodown.pipeline.history import PipelineHistory
    from zerodown.pipeline.model import Decision, JobRecord, RunRecord

pipeline_app = typer.Typer(help="Pipelines: test -> build -> scan -> publish -> deploy.")
remote_app = typer.Typer(help="Git remotes zerodown serves: a push runs the pipeline.")
artifacts_app = typer.Typer(help="Published revisions and their retention.")
console = lazy_console(highlight=False)
T = TypeVar("T")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="zerodown.yml (default: search upwards).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
_STATE_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
    "superseded": "yellow",
    "skipped": "dim",
    "running": "cyan",
    "waiting": "magenta",
    "deploying": "cyan",
    "queued": "dim",
}
FOLLOW_POLL = 0.3


def register(app: typer.Typer) -> None:
    """Mount the pipeline commands on the main app."""
    app.add_typer(pipeline_app, name="pipeline")
    app.add_typer(remote_app, name="remote")
    app.add_typer(artifacts_app, name="artifacts")
    app.command("approve")(approve_command)


def _with_history(loaded: LoadedConfig, work: Callable[[PipelineHistory], Awaitable[T]]) -> T:
    from zerodown.pipeline.history import PipelineHistory
    from zerodown.store.sql import open_store

    async def main() -> T:
        store = open_store(loaded.store_url)
        try:
            return await work(PipelineHistory(store))
        finally:
            await store.close()

    return asyncio.run(main())


def _styled(state: str) -> str:
    return f"[{_STATE_STYLE.get(state, 'white')}]{state}[/]"


def _inputs(values: list[str]) -> dict[str, str]:
    result = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--input {item!r}: write name=value, e.g. skip_tests=true")
        result[key.strip()] = value.strip()
    return result


class ConsoleListener:
    """Prints a run live: each output line prefixed by its job, job states, decisions."""

    def on_line(self, job: str, line: str) -> None:
        """Print one masked line."""
        console.print(f"[dim]{escape(job)} |[/dim] {escape(line)}", soft_wrap=True)

    def on_job(self, job: JobRecord) -> None:
        """Print a job's state change."""
        if job.state is JobState.RUNNING:
            console.print(f"[bold]▶ {escape(job.name)}[/bold] ({job.kind})")
            return
        took = ""
        if job.started_at is not None and job.finished_at is not None:
            took = f" in {job.finished_at - job.started_at:.1f}s"
        why = f": {escape(job.reason)}" if job.reason else ""
        console.print(f"[bold]■ {escape(job.name)}[/bold] {_styled(job.state)}{took}{why}")

    def on_decision(self, decision: Decision) -> None:
        """Print a decision and its reason."""
        console.print(f"[magenta]decision[/magenta] {decision.decision}: {escape(decision.reason)}")


# -- pipeline run / execute ---------------------------------------------------------------------


@pipeline_app.command("run")
def run_command(
    branch: Annotated[str, typer.Option("--branch", "-b", help="Branch to run (and deploy).")],
    sha: Annotated[
        str | None, typer.Option(help="Commit to run (default: the branch head).")
    ] = None,
    input_: Annotated[
        list[str], typer.Option("--input", "-i", help="name=value, e.g. skip_tests=true.")
    ] = [],  # noqa: B006  (typer reads the default; it is never mutated)
    trigger: Annotated[str, typer.Option(hidden=True)] = "cli",
    actor: Annotated[str | None, typer.Option("--as", help="Who runs it.")] = None,
    detach: Annotated[
        bool, typer.Option(help="Queue it and return; it runs in background.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Run the pipeline for BRANCH: jobs, gates, then the deploy its environment wants."""
    from zerodown.cli.deploy import actor_name
    from zerodown.config import load_config
    from zerodown.pipeline.model import RunState
    from zerodown.pipeline.runner import PipelineRunner, pipeline_of
    from zerodown.pipeline.triggers import spawn_run

    loaded = load_config(config)
    pipeline_of(loaded)
    who = actor_name(actor)

    async def create(history: PipelineHistory) -> RunRecord:
        runner = PipelineRunner(loaded, history)
        return await runner.create(
            branch=branch, sha=sha, inputs=_inputs(input_), trigger=trigger, actor=who
        )

    run = _with_history(loaded, create)
    where = run.environment or "no environment (jobs only)"
    console.print(f"pipeline run [bold]{run.id[:8]}[/bold]: {branch} {run.sha[:10]} -> {where}")
    if detach:
        spawn_run(loaded, run.id)
        console.print(f"queued; follow it with: zerodown pipeline logs {run.id[:8]} -f")
        return
    final = _execute(loaded, run.id)
    raise typer.Exit(0 if final.state is RunState.SUCCEEDED else 1)


@pipeline_app.command("execute", hidden=True)
def execute_command(run_id: str, config: ConfigOption = None) -> None:
    """Execute a queued run (what --detach starts in the background)."""
    from zerodown.config import load_config
    from zerodown.pipeline.model import RunState

    final = _execute(load_config(config), run_id)
    raise typer.Exit(0 if final.state is RunState.SUCCEEDED else 1)


def _execute(loaded: LoadedConfig, run_id: str) -> RunRecord:
    from rich.markup import escape

    from zerodown.pipeline.notify import close_notifier, notifier_from_config
    from zerodown.pipeline.runner import PipelineRunner, default_masker
    from zerodown.pipeline.stages.deploy import EngineDeployments

    async def work(history: PipelineHistory) -> RunRecord:
        masker = default_masker()
        notifier = notifier_from_config(loaded, history.store, masker)
        deployments = EngineDeployments(loaded)
        runner = PipelineRunner(
            loaded,
            history,
            deployments=deployments,
            notifier=notifier,
            listener=ConsoleListener(),
            masker=masker,
        )
        try:
            return await runner.execute((await history.get_run(run_id)).id)
        finally:
            await deployments.close()
            await close_notifier(notifier)

    final = _with_history(loaded, work)
    why = f": {escape(final.reason)}" if final.reason else ""
    console.print(f"pipeline run {final.id[:8]} {_styled(final.state)}{why}")
    return final


# -- list / show / logs / cancel / approve ------------------------------------------------------


@pipeline_app.command("list")
def list_command(
    env: Annotated[str | None, typer.Option("--env", "-e", help="Only this environment.")] = None,
    limit: Annotated[int, typer.Option(help="How many.")] = 20,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Recent pipeline runs, newest first."""
    from rich.markup import escape
    from rich.table import Table

    from zerodown.config import load_config

    loaded = load_config(config)
    runs = _with_history(loaded, lambda h: h.list_runs(environment=env, limit=limit))
    if as_json:
        console.print_json(json.dumps([_run_dict(r) for r in runs]))
        return
    table = Table()
    for column in ("run", "branch", "sha", "env", "state", "trigger", "age", "reason"):
        table.add_column(column, overflow="fold")
    for run in runs:
        table.add_row(
            run.id[:8],
            run.branch,
            run.sha[:10],
            run.environment or "-",
            _styled(run.state),
            run.trigger,
            f"{time.time() - run.created_at:.0f}s",
            escape(run.reason or ""),
        )
    console.print(table)


@pipeline_app.command("show")
def show_command(run_id: str, as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """One run: its jobs, decisions and approvals."""
    from rich.markup import escape
    from rich.table import Table

    from zerodown.config import load_config

    loaded = load_config(config)

    async def read(history: PipelineHistory) -> dict[str, Any]:
        run = await history.get_run(run_id)
        return {
            **_run_dict(run),
            "jobs": [_job_dict(j) for j in await history.jobs(run.id)],
            "decisions": [d.__dict__ for d in await history.decisions(run.id)],
            "approvers": await history.approvers(run.id),
        }

    shown = _with_history(loaded, read)
    if as_json:
        console.print_json(json.dumps(shown, default=str))
        return
    console.print(
        f"run [bold]{shown['id']}[/bold] {shown['branch']} {shown['sha'][:10]} -> "
        f"{shown['environment'] or '-'}: {_styled(shown['state'])} {escape(shown['reason'] or '')}"
    )
    table = Table()
    for column in ("job", "kind", "state", "seconds", "summary / reason"):
        table.add_column(column, overflow="fold")
    for job in shown["jobs"]:
        detail = job["reason"] or json.dumps(job["summary"])[:200]
        table.add_row(
            job["name"], job["kind"], _styled(job["state"]), job["seconds"], escape(detail)
        )
    console.print(table)
    for decision in shown["decisions"]:
        console.print(f"decision {decision['decision']}: {escape(decision['reason'])}")
    if shown["approvers"]:
        console.print(f"approved by: {', '.join(shown['approvers'])}")


@pipeline_app.command("logs")
def logs_command(
    run_id: str,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream until the run ends.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """A run's job output (masked); -f follows it live."""
    from rich.markup import escape

    from zerodown.config import load_config

    loaded = load_config(config)

    async def stream(history: PipelineHistory) -> None:
        run = await history.get_run(run_id)
        after = 0
        while True:  # bounded: ends with the run (or Ctrl-C)
            for line in await history.logs(run.id, after=after):
                after = line.id
                console.print(
                    f"[dim]{escape(line.job)} |[/dim] {escape(line.line)}", soft_wrap=True
                )
            if not follow or run.state.terminal:
                if follow:
                    console.print(f"run {run.id[:8]} {_styled(run.state)}")
                return
            await asyncio.sleep(FOLLOW_POLL)
            run = await history.get_run(run.id)

    _with_history(loaded, stream)


@pipeline_app.command("cancel")
def cancel_command(
    run_id: str,
    actor: Annotated[str | None, typer.Option("--as", help="Who cancels it.")] = None,
    config: ConfigOption = None,
) -> None:
    """Stop a run (a deploy in flight finishes first; the fleet is never left half-switched)."""
    from zerodown.cli.deploy import actor_name
    from zerodown.config import load_config

    loaded = load_config(config)
    who = actor_name(actor)

    async def cancel(history: PipelineHistory) -> RunRecord:
        run = await history.get_run(run_id)
        return await history.request_cancel(run.id, f"cancelled by {who}", now=time.time())

    run = _with_history(loaded, cancel)
    note = "it had ended already" if run.state.terminal else "cancel requested"
    console.print(f"run {run.id[:8]}: {_styled(run.state)} ({note})")


def approve_command(
    run_id: Annotated[str, typer.Argument(help="The pipeline run to approve.")],
    actor: Annotated[str | None, typer.Option("--as", help="Approver (default: git user).")] = None,
    config: ConfigOption = None,
) -> None:
    """Approve a pipeline run waiting to deploy (each person counts once)."""
    from zerodown.cli.deploy import actor_name
    from zerodown.config import load_config
    from zerodown.pipeline.approvals import approve

    loaded = load_config(config)
    who = actor_name(actor)

    async def work(history: PipelineHistory) -> tuple[RunRecord, bool, list[str]]:
        run = await history.get_run(run_id)
        added, approvers = await approve(history, run.id, who, now=time.time())
        return run, added, approvers

    run, added, approvers = _with_history(loaded, work)
    note = "" if added else f" ({who} had approved already)"
    console.print(f"run {run.id[:8]} approved by {', '.join(approvers)}{note}")


# -- remote / artifacts -------------------------------------------------------------------------


@remote_app.command("add")
def remote_add_command(name: str, config: ConfigOption = None) -> None:
    """Create a git remote here: `git push NAME main` runs the pipeline for main."""
    from zerodown.config import load_config
    from zerodown.pipeline.triggers import add_remote

    loaded = load_config(config)
    remote = add_remote(loaded, name)
    console.print(f"remote {name}: {remote.url}")
    console.print(f"add it with: git remote add {name} {remote.url}")


@artifacts_app.command("list")
def artifacts_list_command(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """Published revisions with their tags, newest first."""
    from rich.table import Table

    from zerodown.config import load_config

    loaded = load_config(config)
    rows = _with_history(loaded, lambda h: h.artifacts())
    data: list[dict[str, Any]] = [
        {
            "revision": row.revision,
            "digest": row.digest,
            "tags": [t for t in tags if t != row.revision],
            "environment": row.environment,
            "created_at": row.created_at,
            "size": row.size,
        }
        for row, tags in rows
    ]
    if as_json:
        console.print_json(json.dumps(data))
        return
    table = Table()
    for column in ("revision", "tags", "env", "digest", "age"):
        table.add_column(column, overflow="fold")
    for item in data:
        table.add_row(
            str(item["revision"])[:10],
            ", ".join(item["tags"]),
            str(item["environment"] or "-"),
            str(item["digest"])[:20],
            f"{(time.time() - float(item['created_at'])) / 86400:.1f}d",
        )
    console.print(table)


@artifacts_app.command("prune")
def artifacts_prune_command(
    dry_run: Annotated[bool, typer.Option(help="Say what would go; delete nothing.")] = False,
    config: ConfigOption = None,
) -> None:
    """Apply the retention policies (published revisions, and every service's prepared
    releases); never deletes a deployed revision, a rollback target or a release in use."""
    from zerodown.config import load_config
    from zerodown.pipeline.artifacts import ArtifactInfo, LocalArtifactStore, plan_prune
    from zerodown.pipeline.stages.deploy import protected_revisions
    from zerodown.revisions import ReleaseRetention, StoredRelease
    from zerodown.runtimes.registry import open_runtime

    loaded = load_config(config)
    policy = loaded.config.pipeline.retention if loaded.config.pipeline else None
    store = LocalArtifactStore(loaded.state_dir / "artifacts")

    async def prune(
        history: PipelineHistory,
    ) -> tuple[list[tuple[ArtifactInfo, str]], list[StoredRelease]]:
        retention = ReleaseRetention(
            loaded, history.store, open_runtime(loaded.config.runtime, loaded.state_dir)
        )
        releases = [
            release
            for service in loaded.config.services
            for release in await retention.prune(service, dry_run=dry_run)
        ]
        if policy is None:  # no pipeline: nothing was published
            return [], releases
        rows = await history.artifacts()
        infos = [ArtifactInfo(r.revision, r.created_at, tuple(t), r.location) for r, t in rows]
        keep = await protected_revisions(
            history.store, list(loaded.config.services), list(loaded.config.environments)
        )
        doomed = plan_prune(infos, protected=keep, policy=policy, now=time.time())
        if not dry_run:
            for info, _ in doomed:
                if info.location:
                    await store.delete(info.location)
                await history.delete_artifact(info.revision)
        return doomed, releases

    doomed, releases = _with_history(loaded, prune)
    verb = "would delete" if dry_run else "deleted"
    for release in releases:
        console.print(f"{verb} release {release.sha[:10]} of {release.service}")
    for info, why in doomed:
        console.print(f"{verb} {info.revision[:10]}: {why}")
    console.print(f"{verb} {len(doomed)} revision(s) and {len(releases)} release(s)")


def _run_dict(run: RunRecord) -> dict[str, Any]:
    return {
        "id": run.id,
        "branch": run.branch,
        "sha": run.sha,
        "environment": run.environment,
        "state": run.state.value,
        "trigger": run.trigger,
        "actor": run.actor,
        "inputs": dict(run.inputs),
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "reason": run.reason,
        "commit_message": run.commit_message,
    }


def _job_dict(job: JobRecord) -> dict[str, Any]:
    seconds = ""
    if job.started_at is not None and job.finished_at is not None:
        seconds = f"{job.finished_at - job.started_at:.1f}"
    return {
        "name": job.name,
        "kind": job.kind,
        "state": job.state.value,
        "seconds": seconds,
        "command_seconds": job.command_seconds,
        "exit_code": job.exit_code,
        "summary": dict(job.summary),
        "reason": job.reason,
    }
