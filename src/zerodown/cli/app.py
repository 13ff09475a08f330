"""The `zerodown` Typer application: project commands here, the rest mounted from modules."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import typer

from zerodown import __version__
from zerodown.cli.api import register as register_api_commands
from zerodown.cli.console import lazy_console
from zerodown.cli.deploy import register as register_deploy_commands
from zerodown.cli.images import register as register_images_commands
from zerodown.cli.metrics import register as register_metrics_commands
from zerodown.cli.notify import register as register_notify_commands
from zerodown.cli.pipeline import register as register_pipeline_commands
from zerodown.cli.progressive import register as register_progressive_commands
from zerodown.cli.router import router_app
from zerodown.cli.secrets import register as register_secrets_commands
from zerodown.errors import ConfigError

app = typer.Typer(
    help="Build, test, ship, verify and roll back web services without dropping a request.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rendering it with rich costs ~0.3 s of start-up
    add_completion=False,
)
app.add_typer(router_app, name="router")
register_deploy_commands(app)
register_images_commands(app)
register_metrics_commands(app)
register_api_commands(app)
register_notify_commands(app)
register_pipeline_commands(app)
register_progressive_commands(app)
register_secrets_commands(app)
console = lazy_console(highlight=False)

Preset = Literal["fastapi", "spring-boot"]


@app.command()
def version() -> None:
    """Print zerodown's version."""
    typer.echo(f"zerodown {__version__}")  # no rich console: the fastest command stays fast


@app.command()
def init(
    preset: Annotated[str, typer.Option(help="fastapi or spring-boot.")] = "fastapi",
    directory: Annotated[Path, typer.Argument(help="Where to write zerodown.yml.")] = Path("."),
    force: Annotated[bool, typer.Option(help="Overwrite an existing zerodown.yml.")] = False,
) -> None:
    """Write a zerodown.yml for a FastAPI or Spring Boot service."""
    from zerodown.config import load_config
    from zerodown.config.loader import DEFAULT_FILE

    if preset not in ("fastapi", "spring-boot"):
        raise ConfigError(
            f"unknown preset {preset!r}: use fastapi or spring-boot", field="--preset"
        )
    target = directory / DEFAULT_FILE
    if target.exists() and not force:
        raise ConfigError("already exists: edit it, or pass --force to overwrite", path=str(target))
    text = resources.files("zerodown.cli.templates").joinpath(f"{preset}.yml").read_text()
    directory.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    load_config(target)  # a template that does not validate is our bug: fail loudly here
    console.print(
        f"wrote {target} (preset {preset}); next: commit your code to git, then "
        "`zerodown deploy api --env dev` (deploys HEAD; --revision picks a sha, branch or tag)"
    )


@app.command()
def check(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="zerodown.yml")] = None,
) -> None:
    """Validate zerodown.yml and say what it defines."""
    from zerodown.config import load_config

    loaded = load_config(config)
    services = ", ".join(f"{name} x{svc.instances}" for name, svc in loaded.config.services.items())
    envs = ", ".join(
        f"{name} ({env.strategy.type})" for name, env in loaded.config.environments.items()
    )
    console.print(f"{loaded.path}: ok — services: {services}; environments: {envs}")


@app.command()
def schema() -> None:
    """Print the JSON Schema of zerodown.yml (for editors), generated from the model."""
    from zerodown.config import ZerodownConfig

    console.print_json(json.dumps(ZerodownConfig.model_json_schema()))
