"""Steering a running canary or blue/green deployment: promote [--full], pause, resume.

The command goes to the history store's `deployment_commands`, so it reaches the deployment
whichever process runs it (a CLI deploy, `zerodown serve`, the API).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from zerodown.cli.console import lazy_console
from zerodown.cli.deploy import ConfigOption, EnvOption
from zerodown.errors import ConfigError

if TYPE_CHECKING:  # imported where used, so that the CLI starts fast
    from zerodown.control_plane import ControlPlane
    from zerodown.engine.commands import Command

console = lazy_console(highlight=False)

ServiceArgument = Annotated[str, typer.Argument(help="Service whose deployment to steer.")]
ActorOption = Annotated[str | None, typer.Option(help="Who asks (default: git user).")]


def _send(
    config: ConfigOption, service: str, env: str, command: Command, actor: str | None
) -> None:
    from zerodown.cli.deploy import actor_name, open_and_run
    from zerodown.control_plane import check_target
    from zerodown.engine.commands import send_command

    who = actor_name(actor)

    async def work(plane: ControlPlane) -> str:
        check_target(plane.loaded, service, env)
        holder = await plane.store.lock_holder(service, env)
        if holder is None:
            raise ConfigError(
                f"no deployment of {service}/{env} is running: nothing to {command.value}"
            )
        await send_command(plane.store, holder.deployment_id, command, who)
        return holder.deployment_id

    deployment_id = open_and_run(config, work, recover=False)
    console.print(
        f"sent {command.value.replace('_', ' ')} to deployment {deployment_id[:8]} of "
        f"{service}/{env}; it acts on it within a second"
    )


def promote(
    service: ServiceArgument,
    env: EnvOption,
    full: Annotated[bool, typer.Option("--full", help="Skip the remaining steps: 100 % now.")] = (
        False
    ),
    actor: ActorOption = None,
    config: ConfigOption = None,
) -> None:
    """Move SERVICE's canary to its next step now (--full: straight to 100 %)."""
    from zerodown.engine.commands import Command

    _send(config, service, env, Command.PROMOTE_FULL if full else Command.PROMOTE, actor)


def pause(
    service: ServiceArgument, env: EnvOption, actor: ActorOption = None, config: ConfigOption = None
) -> None:
    """Hold SERVICE's canary at its current step (analysis keeps running) until resume."""
    from zerodown.engine.commands import Command

    _send(config, service, env, Command.PAUSE, actor)


def resume(
    service: ServiceArgument, env: EnvOption, actor: ActorOption = None, config: ConfigOption = None
) -> None:
    """Let a paused canary of SERVICE go on."""
    from zerodown.engine.commands import Command

    _send(config, service, env, Command.RESUME, actor)


def register(app: typer.Typer) -> None:
    """Add promote, pause and resume to the main application."""
    for command in (promote, pause, resume):
        app.command()(command)
