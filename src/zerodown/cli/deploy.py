"""Deployment commands: deploy, rollback, abort, status, history, logs, stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from zerodown.cli.console import lazy_console
from zerodown.errors import ConfigError, ZerodownError

if TYPE_CHECKING:  # imported where used, so that the CLI starts fast
    from zerodown.config import LoadedConfig
    from zerodown.control_plane import ControlPlane
    from zerodown.domain.records import DeploymentRecord
    from zerodown.engine.deployer import Deployer

console = lazy_console(highlight=False)
T = TypeVar("T")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="zerodown.yml (default: search upwards).")
]
EnvOption = Annotated[str, typer.Option("--env", "-e", help="Environment, e.g. dev or prod.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def actor_name(explicit: str | None) -> str:
    """Who acts: the given name, else git's user.name, else $USER."""
    if explicit:
        return explicit
    try:
        name = subprocess.run(
            ["git", "config", "user.name"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    except OSError:
        name = ""
    return name or os.environ.get("USER", "unknown")


def open_and_run(
    config: Path | None,
    work: Callable[[ControlPlane], Awaitable[T]],
    *,
    recover: bool = True,
) -> T:
    """Load the config, open the control plane, run `work` on it, close it."""
    from zerodown.config import load_config
    from zerodown.control_plane import ControlPlane

    loaded = load_config(config)

    async def main() -> T:
        plane = await ControlPlane.open(loaded, recover=recover)
        try:
            return await work(plane)
        finally:
            await plane.close()

    return asyncio.run(main())


_ABORT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
_SIGNAL_SOURCES = {
    signal.SIGINT: "Ctrl-C",
    signal.SIGTERM: "SIGTERM",
    signal.SIGUSR1: "`zerodown abort`",
}


def _run_deployment(
    loaded: LoadedConfig,
    work: Callable[[Deployer], Awaitable[DeploymentRecord]],
    *,
    verbose: bool = False,
    ref: str | None = None,
) -> DeploymentRecord:
    """Open the control plane and run one deployment with live progress. The first Ctrl-C,
    SIGTERM or SIGUSR1 (`zerodown abort`) fails it and rolls the fleet back; later ones are
    refused while the rollback runs, so the fleet is never left half-switched."""
    from zerodown.cli.progress import ConsoleProgress
    from zerodown.control_plane import ControlPlane

    async def main() -> DeploymentRecord:
        progress = ConsoleProgress(console, verbose=verbose, ref=ref)
        plane = await ControlPlane.open(loaded, observers=[progress])
        loop = asyncio.get_running_loop()
        aborted = False
        deployer = plane.deployer([progress])

        def on_signal(sig: signal.Signals) -> None:
            nonlocal aborted
            if aborted:
                console.print(f"[yellow]{sig.name}: rolling back already; let it finish[/yellow]")
                return
            aborted = True
            console.print(f"[bold yellow]{sig.name}: aborting; the fleet rolls back[/bold yellow]")
            deployer.abort(reason=f"aborted by {_SIGNAL_SOURCES[sig]}")

        for sig in _ABORT_SIGNALS:
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            return await work(deployer)
        finally:
            for sig in _ABORT_SIGNALS:
                loop.remove_signal_handler(sig)
            await plane.close()

    return asyncio.run(main())


def _run_remote(
    loaded: LoadedConfig, request: dict[str, Any], *, verbose: bool = False
) -> DeploymentRecord | None:
    """Hand the deployment to a running `zerodown serve`, if there is one, and follow it live.
    Ctrl-C asks serve to abort it (the fleet rolls back). None: no serve runs here."""
    from zerodown.cli.progress import ConsoleProgress
    from zerodown.server.socket_api import call, event_from_dict, record_from_dict, serve_is_running

    state_dir = loaded.state_dir

    async def main() -> DeploymentRecord | None:
        if not await serve_is_running(state_dir):
            return None
        progress = ConsoleProgress(console, verbose=verbose, ref=request.get("revision"))
        loop = asyncio.get_running_loop()
        aborts: set[asyncio.Task[None]] = set()

        async def ask_abort(sig: signal.Signals) -> None:
            abort = {
                "op": "abort",
                "service": request["service"],
                "environment": request["environment"],
                "reason": f"aborted by {_SIGNAL_SOURCES[sig]}",
            }
            async for _ in call(state_dir, abort):
                pass

        def on_signal(sig: signal.Signals) -> None:
            console.print(f"[bold yellow]{sig.name}: asking zerodown serve to abort[/bold yellow]")
            task = asyncio.ensure_future(ask_abort(sig))
            aborts.add(task)
            task.add_done_callback(aborts.discard)

        for sig in _ABORT_SIGNALS:
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            async for answer in call(state_dir, request):
                if "event" in answer:
                    await progress.on_event(event_from_dict(answer["event"]))
                elif answer.get("ok"):
                    return record_from_dict(answer["record"])
                else:
                    code = int(answer.get("exit_code", 1))
                    error = ConfigError(answer["error"]) if code == 2 else None
                    raise error or ZerodownError(answer["error"])
            raise ZerodownError("zerodown serve closed the connection before the deployment ended")
        finally:
            for sig in _ABORT_SIGNALS:
                loop.remove_signal_handler(sig)

    return asyncio.run(main())


def _finish(record: DeploymentRecord) -> None:
    from zerodown.domain.events import DeploymentState
    from zerodown.server.views import record_revision_label

    seconds = f"{record.duration:.1f}s" if record.duration is not None else "-"
    if record.state is DeploymentState.SUCCEEDED:
        console.print(
            f"[bold green]succeeded[/bold green] {record.service}/{record.environment} "
            f"{record_revision_label(record)} in {seconds} (deployment {record.id[:8]})"
        )
        raise typer.Exit(0)
    console.print(
        f"[bold red]{record.state.value}[/bold red] {record.service}/{record.environment} "
        f"{record_revision_label(record)} after {seconds}: {record.reason} "
        f"(deployment {record.id[:8]})",
        soft_wrap=True,
    )
    raise typer.Exit(1)


def deploy(
    service: Annotated[str, typer.Argument(help="Service to deploy.")],
    env: EnvOption,
    revision: Annotated[
        str | None,
        typer.Option(
            "--revision", "-r", help="git sha, branch or tag (default: HEAD of the source repo)."
        ),
    ] = None,
    actor: Annotated[str | None, typer.Option(help="Who deploys (default: git user).")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for a running deployment to end.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Every probe, hook output.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Deploy a revision of SERVICE; exit 0 succeeded, 1 failed (rolled back), 2 bad input."""
    from zerodown.config import load_config
    from zerodown.control_plane import check_target
    from zerodown.engine.deployer import DeployRequest

    loaded = load_config(config)
    check_target(loaded, service, env)
    if revision is None:
        if loaded.config.services[service].source is None:
            raise ConfigError(
                f"service {service} has no `source:` to take HEAD from: "
                "name what you deploy with --revision LABEL",
                field="--revision",
            )
        revision = "HEAD"
    request = DeployRequest(
        service=service, environment=env, revision=revision, actor=actor_name(actor)
    )
    wait_for_lock = 600.0 if wait else None
    remote = _run_remote(
        loaded,
        {
            "op": "deploy",
            "service": service,
            "environment": env,
            "revision": revision,
            "actor": request.actor,
            "wait_for_lock": wait_for_lock,
        },
        verbose=verbose,
    )
    if remote is not None:
        _finish(remote)
    _finish(
        _run_deployment(
            loaded,
            lambda deployer: deployer.deploy(request, wait_for_lock=wait_for_lock),
            verbose=verbose,
            ref=revision,
        )
    )


def rollback(
    service: Annotated[str, typer.Argument(help="Service to roll back.")],
    env: EnvOption,
    to: Annotated[
        str | None, typer.Option("--to", help="Revision (default: previous good).")
    ] = None,
    actor: Annotated[str | None, typer.Option(help="Who rolls back (default: git user).")] = None,
    config: ConfigOption = None,
) -> None:
    """Put SERVICE back on the previous successful revision (or --to REV), with zero downtime."""
    from zerodown.config import load_config
    from zerodown.control_plane import check_target

    loaded = load_config(config)
    check_target(loaded, service, env)
    who = actor_name(actor)
    remote = _run_remote(
        loaded,
        {"op": "rollback", "service": service, "environment": env, "to": to, "actor": who},
    )
    if remote is not None:
        _finish(remote)
    _finish(
        _run_deployment(loaded, lambda deployer: deployer.rollback(service, env, to=to, actor=who))
    )


def abort(
    service: Annotated[str, typer.Argument(help="Service whose deployment to abort.")],
    env: EnvOption,
    config: ConfigOption = None,
) -> None:
    """Abort the running deployment of SERVICE in ENV: it rolls the fleet back."""
    from zerodown.control_plane import check_target

    async def work(plane: ControlPlane) -> None:
        check_target(plane.loaded, service, env)
        serve_pid = await _serve_pid(plane.loaded)
        if serve_pid is not None and await _abort_through_serve(plane.loaded, service, env):
            console.print(f"asked zerodown serve to abort {service}/{env}; it rolls the fleet back")
            return
        holder = await plane.store.lock_holder(service, env)
        if holder is None:
            raise ConfigError(f"no deployment of {service}/{env} is running: nothing to abort")
        if holder.pid in (serve_pid, os.getpid()):
            # Only a `zerodown deploy` process takes SIGUSR1 as "abort"; serve never gets one.
            raise ConfigError(
                f"deployment {holder.deployment_id[:8]} is being finished by zerodown serve "
                f"(pid {holder.pid}) after a crash: it cannot be aborted; wait for it to end"
            )
        try:
            os.kill(holder.pid, signal.SIGUSR1)
        except ProcessLookupError:
            raise ZerodownError(
                f"deployment {holder.deployment_id[:8]} has no running process (pid {holder.pid}); "
                "the next zerodown command recovers it"
            ) from None
        console.print(
            f"asked deployment {holder.deployment_id[:8]} (pid {holder.pid}) to abort; "
            "it rolls the fleet back"
        )

    open_and_run(config, work, recover=False)


async def _serve_pid(loaded: LoadedConfig) -> int | None:
    """The pid of the `zerodown serve` that answers on this state dir, if one does."""
    from zerodown.server.socket_api import call, serve_is_running

    if not await serve_is_running(loaded.state_dir):
        return None
    async for answer in call(loaded.state_dir, {"op": "ping"}):
        return int(answer["pid"]) if answer.get("ok") else None
    return None


async def _abort_through_serve(loaded: LoadedConfig, service: str, env: str) -> bool:
    """True if the running `zerodown serve` runs this deployment and took the abort."""
    from zerodown.server.socket_api import call

    request = {"op": "abort", "service": service, "environment": env}
    async for answer in call(loaded.state_dir, request):
        return bool(answer.get("ok"))
    return False


def _record_json(record: DeploymentRecord) -> dict[str, Any]:
    from zerodown.server.views import deployment_view

    return deployment_view(record)


def status(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """What runs where: revision, instances, health, last deployment; and orphans."""
    from zerodown.cli.fast_path import print_status, status_through_serve

    views = status_through_serve(config)
    if views is None:  # no serve here: open the control plane in this process
        from zerodown.server.views import status_views

        views = open_and_run(config, status_views)
    print_status(views, as_json=as_json)


def history(
    service: Annotated[str | None, typer.Argument(help="Only this service.")] = None,
    env: Annotated[str | None, typer.Option("--env", "-e", help="Only this environment.")] = None,
    limit: Annotated[int, typer.Option(help="How many.")] = 20,
    wide: Annotated[
        bool, typer.Option("--wide", "-w", help="Whole reasons, however long.")
    ] = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Past deployments, newest first; a reason below its row, cut to fit (--wide: whole)."""

    async def work(plane: ControlPlane) -> list[DeploymentRecord]:
        return await plane.store.list_deployments(service=service, environment=env, limit=limit)

    records = open_and_run(config, work, recover=False)
    if as_json:
        print(json.dumps([_record_json(r) for r in records], indent=2))
        return
    if not records:
        console.print("no deployments yet")
        return
    header, *rows = _history_columns(records)
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    console.print(
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
        style="bold",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    for record, row in zip(records, rows, strict=True):
        line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        console.print(line, markup=False, highlight=False, soft_wrap=True)
        # The reason on its own line, cut to the terminal ("…") unless --wide asks for all of it
        # (one reason folded into a table column took 37 lines at 80 columns).
        reason = " ".join((record.reason or "").split())
        if reason:
            console.print(
                f"  {reason}",
                markup=False,
                highlight=False,
                style="dim",
                **({"soft_wrap": True} if wide else {"no_wrap": True, "overflow": "ellipsis"}),
            )


def _history_columns(records: list[DeploymentRecord]) -> list[tuple[str, ...]]:
    """`zerodown history`'s header and one row per deployment (the reason goes below)."""
    from zerodown.server.views import record_revision_label

    header: tuple[str, ...] = ("id", "when", "service", "env", "revision", "state", "took", "actor")
    return [header] + [
        (
            r.id[:8],
            time.strftime("%m-%d %H:%M", time.localtime(r.created_at)),
            r.service,
            r.environment,
            record_revision_label(r),
            r.state.value + ("" if r.kind == "deploy" else f" ({r.kind})"),
            f"{r.duration:.1f}s" if r.duration is not None else "-",
            r.actor,
        )
        for r in records
    ]


def logs(
    service: Annotated[str, typer.Argument(help="Service whose instance logs to show.")],
    env: Annotated[str | None, typer.Option("--env", "-e", help="Only this environment.")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    lines: Annotated[
        int, typer.Option("--lines", "-n", help="Lines of history per instance.")
    ] = 50,
    config: ConfigOption = None,
) -> None:
    """Output of SERVICE's instances (prefixed by instance), also of crashed ones since removed."""
    from zerodown.config import load_config

    loaded = load_config(config)
    asyncio.run(_tail_logs(loaded, service, env, follow=follow, lines=lines))


async def _tail_logs(
    loaded: LoadedConfig, service: str, env: str | None, *, follow: bool, lines: int
) -> None:
    from rich.markup import escape

    from zerodown.runtimes.base import InstanceState
    from zerodown.runtimes.registry import open_runtime

    if service not in loaded.config.services:
        raise ConfigError(f"unknown service {service!r}", path=str(loaded.path), field="services")
    runtime = open_runtime(loaded.config.runtime, loaded.state_dir)
    # Crashed instances a rollback removed come first (their output is kept), oldest first.
    exited = list(reversed(await runtime.list_exited(service)))
    running = await runtime.list(service)
    infos = [i for i in [*exited, *running] if env is None or i.labels.get("environment") == env]
    if not infos:
        console.print(f"no instances of {service} are known")
        return
    # Where following starts: taken before the history is read, so no line falls in between.
    follow_since = time.time()
    for info in infos:
        ended = info.state in (InstanceState.STOPPED, InstanceState.FAILED)
        prefix = f"[cyan]{info.instance_id}[/cyan]" + (" (exited)" if ended else "")
        try:
            history = await runtime.output_tail(info.instance_id, lines)
        except ZerodownError:
            continue  # removed meanwhile
        for line in history:
            console.print(f"{prefix} {escape(line)}", soft_wrap=True)
    if not follow:
        return

    async def follow_one(instance_id: str) -> None:
        try:
            async for line in runtime.logs(instance_id, since=follow_since, follow=True):
                console.print(f"[cyan]{instance_id}[/cyan] {escape(line)}", soft_wrap=True)
        except ZerodownError:
            return  # removed meanwhile

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(24 * 3600):  # bounded even when following
            await asyncio.gather(*(follow_one(i.instance_id) for i in infos if i not in exited))


def stop(
    env: Annotated[
        str | None,
        typer.Option(
            "--env",
            "-e",
            help="Only this environment (also one zerodown.yml no longer defines); the router "
            "and the other environments keep serving.",
        ),
    ] = None,
    service: Annotated[
        str | None, typer.Option("--service", "-s", help="With --env: only this service.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Stop every instance and the router of this project, or one environment's instances."""
    if service is not None and env is None:
        raise ConfigError("--service needs --env: write zerodown stop --env E --service S")

    async def work(plane: ControlPlane) -> int:
        if env is not None:
            return await plane.stop_environment(env, service)
        return await plane.stop_everything()

    count = open_and_run(config, work, recover=False)
    if env is not None:
        what = f"{service}/{env}" if service else env
        console.print(f"stopped {count} instance(s) of {what}; the router keeps serving the rest")
        return
    console.print(f"stopped {count} instance(s) and the router")


def serve(config: ConfigOption = None) -> None:
    """Run the control plane: finish interrupted deployments, take deploys from the CLI.

    Ctrl-C stops only the control plane: the router and the instances keep serving.
    """
    from zerodown.cli.progress import ConsoleProgress
    from zerodown.config import load_config
    from zerodown.server.lifecycle import Serve

    asyncio.run(Serve(load_config(config), console, ConsoleProgress(console)).run())


def register(app: typer.Typer) -> None:
    """Add these commands to the main application."""
    for command in (serve, deploy, rollback, abort, status, history, logs, stop):
        app.command()(command)
