"""`zerodown secrets set|get|list|rm --env ENV NAME`: an environment's secrets.

Values are read from stdin (piped) or a hidden prompt, never from the command line, where `ps`
and shell history would keep them. `get` prints a value only with `--reveal`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from zerodown.cli.console import lazy_console
from zerodown.errors import ConfigError, SecretsError
from zerodown.secrets.masking import MASK, global_masker

if TYPE_CHECKING:  # imported where used, so that the CLI starts fast
    from zerodown.config import LoadedConfig
    from zerodown.config.secrets import SecretSourceConfig
    from zerodown.secrets.base import SecretStore

secrets_app = typer.Typer(
    help="Secrets of an environment (values from stdin or a prompt, never from argv).",
    no_args_is_help=True,
)
console = lazy_console(highlight=False)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="zerodown.yml (default: search upwards).")
]
EnvOption = Annotated[str, typer.Option("--env", "-e", help="Environment, e.g. dev or prod.")]
NameArgument = Annotated[str, typer.Argument(help="Variable name, e.g. DB_PASSWORD.")]
SourceOption = Annotated[
    int, typer.Option("--source", min=1, help="Which `secrets:` entry to write (1 = first).")
]


def _sources(loaded: LoadedConfig, env: str) -> list[SecretSourceConfig]:
    from zerodown.secrets import effective_sources

    environments = loaded.config.environments
    if env not in environments:
        known = ", ".join(sorted(environments))
        raise ConfigError(
            f"unknown environment {env!r}: zerodown.yml defines {known}",
            path=str(loaded.path),
            field="environments",
        )
    return effective_sources(environments[env].secrets)


def _store(loaded: LoadedConfig, config: SecretSourceConfig) -> SecretStore:
    from zerodown.secrets import open_secret_store

    return open_secret_store(config, state_dir=loaded.state_dir, root=loaded.root)


def _writable(loaded: LoadedConfig, env: str, source: int) -> SecretStore:
    sources = _sources(loaded, env)
    if source > len(sources):
        raise ConfigError(
            f"--source {source}: environment {env} has {len(sources)} secret source(s)",
            field="--source",
        )
    return _store(loaded, sources[source - 1])


def read_value(name: str) -> str:
    """The value to store: piped stdin (one trailing newline dropped) or a hidden prompt."""
    if sys.stdin.isatty():
        value: str = typer.prompt(f"{name}", hide_input=True, confirmation_prompt=True)
    else:
        value = sys.stdin.read()
        value = value.removesuffix("\n").removesuffix("\r")
    if not value:
        raise SecretsError(f"no value for {name}: pipe it on stdin or type it at the prompt")
    return value


@secrets_app.command("set")
def set_secret(
    name: NameArgument, env: EnvOption, source: SourceOption = 1, config: ConfigOption = None
) -> None:
    """Create or replace secret NAME; the value comes from stdin or a hidden prompt."""
    from zerodown.config import load_config
    from zerodown.secrets.base import check_name

    loaded = load_config(config)
    check_name(name)
    store = _writable(loaded, env, source)
    value = read_value(name)
    global_masker().add(value)
    asyncio.run(store.set(env, name, value))
    console.print(f"set {name} in {env} ({store.describe(env)})", soft_wrap=True)


@secrets_app.command("get")
def get_secret(
    name: NameArgument,
    env: EnvOption,
    reveal: Annotated[bool, typer.Option("--reveal", help="Print the value itself.")] = False,
    config: ConfigOption = None,
) -> None:
    """Show secret NAME (masked unless --reveal)."""
    from zerodown.config import load_config
    from zerodown.secrets.base import not_found

    loaded = load_config(config)

    async def find() -> str:
        # the later source wins at deploy time, so it is the one to show
        for source in reversed(_sources(loaded, env)):
            store = _store(loaded, source)
            if name in await store.list(env):
                return await store.get(env, name)
        raise not_found(name, f"the secret sources of {env}")

    value = asyncio.run(find())
    if reveal:
        sys.stdout.write(value + "\n")  # asked for: bypasses the masking console on purpose
        return
    console.print(f"{name}={MASK} ({len(value)} characters; --reveal prints it)")


@secrets_app.command("list")
def list_secrets(
    env: EnvOption,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    config: ConfigOption = None,
) -> None:
    """List the names of ENV's secrets and where each comes from (never values)."""
    from zerodown.config import load_config

    loaded = load_config(config)

    async def collect() -> dict[str, str]:
        found: dict[str, str] = {}
        for source in _sources(loaded, env):
            store = _store(loaded, source)
            for name in await store.list(env):
                found[name] = store.describe(env)  # a later source wins, as when deploying
        return found

    found = asyncio.run(collect())
    if as_json:
        console.print_json(json.dumps([{"name": n, "source": s} for n, s in sorted(found.items())]))
        return
    if not found:
        console.print(f"no secrets in {env}; add one with `zerodown secrets set --env {env} NAME`")
    for name, where in sorted(found.items()):
        console.print(f"{name}  [dim]{where}[/dim]", soft_wrap=True)


@secrets_app.command("rm")
def remove_secret(
    name: NameArgument, env: EnvOption, source: SourceOption = 1, config: ConfigOption = None
) -> None:
    """Delete secret NAME from ENV."""
    from zerodown.config import load_config

    loaded = load_config(config)
    store = _writable(loaded, env, source)
    asyncio.run(store.remove(env, name))
    console.print(f"removed {name} from {env} ({store.describe(env)})", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Mount `zerodown secrets ...` on the main application."""
    app.add_typer(secrets_app, name="secrets")
