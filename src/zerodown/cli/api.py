"""API commands: `zerodown token create|list|revoke` and `zerodown kpis`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from zerodown.cli.console import lazy_console
from zerodown.errors import ConfigError

if TYPE_CHECKING:  # imported where used, so that the CLI starts fast
    from zerodown.server.kpis import ServiceKpis
    from zerodown.store.sql import SqlHistoryStore

console = lazy_console(highlight=False)
token_app = typer.Typer(help="API tokens for the dashboard's actions and the REST API.")
T = TypeVar("T")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="zerodown.yml (default: search upwards).")
]


def _with_store(config: Path | None, work: Callable[[SqlHistoryStore], Awaitable[T]]) -> T:
    from zerodown.config import load_config
    from zerodown.store.sql import open_store

    loaded = load_config(config)

    async def main() -> T:
        store = open_store(loaded.store_url)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(main())


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="What the token is for, e.g. ci or alice.")],
    config: ConfigOption = None,
) -> None:
    """Create a token and print it once (only its hash is stored)."""
    from zerodown.server.auth import TokenStore

    token = _with_store(config, lambda store: TokenStore(store.engine).create(name))
    console.print(f"token {name} created; it is shown only now:", style="bold")
    print(
        token, flush=True
    )  # alone on its line, for scripts: TOKEN=$(zerodown token create ci | tail -1)


@token_app.command("list")
def token_list(config: ConfigOption = None) -> None:
    """Tokens by name, with when they were created and last used (never their secret)."""
    from rich.table import Table

    from zerodown.server.auth import TokenStore

    tokens = _with_store(config, lambda store: TokenStore(store.engine).list())
    if not tokens:
        console.print("no tokens: create one with `zerodown token create NAME`")
        return
    table = Table()
    for column in ("name", "created", "last used"):
        table.add_column(column)
    for info in tokens:
        table.add_row(info.name, _when(info.created_at), _when(info.last_used_at))
    console.print(table)


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    config: ConfigOption = None,
) -> None:
    """Delete a token: requests that carry it get 401 from now on."""
    from zerodown.server.auth import TokenStore

    if not _with_store(config, lambda store: TokenStore(store.engine).revoke(name)):
        raise ConfigError(f"there is no token named {name!r} (see `zerodown token list`)")
    console.print(f"token {name} revoked")


def _when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(at))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _print_kpis(k: ServiceKpis) -> None:
    from rich.table import Table

    console.rule(f"[bold]{k.service}/{k.environment}[/bold] — last {k.days:g} days")
    downtime = "not measured" if k.downtime_seconds is None else _duration(k.downtime_seconds)
    rows: list[tuple[str, str]] = [
        ("deploy frequency", f"{k.deploys_per_week:.1f} / week ({k.deploys_succeeded} succeeded)"),
        ("success rate", f"{_percent(k.success_rate)} ({k.succeeded} of {k.deployments})"),
        ("deploy duration", f"mean {_duration(k.duration_mean)}, p95 {_duration(k.duration_p95)}"),
        (
            "rollbacks",
            f"{k.rollbacks} automatic (max {_duration(k.rollback_seconds_max)}), "
            f"{k.manual_rollbacks} manual",
        ),
        (
            "time to restore",
            f"mean {_duration(k.time_to_restore_mean)}, max {_duration(k.time_to_restore_max)}"
            + (f", {k.unrestored} not restored yet" if k.unrestored else ""),
        ),
        ("change failure rate", _percent(k.change_failure_rate)),
        (
            "lead time",
            f"mean {_duration(k.lead_time_mean)}, median {_duration(k.lead_time_median)}",
        ),
        ("downtime", downtime),
    ]
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="dim")
    table.add_column()
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    verdicts = {True: "[green]met[/green]", False: "[red]not met[/red]", None: "[dim]no data[/dim]"}
    console.print(
        "targets: " + "; ".join(f"{c.name} {c.target}: {verdicts[c.met]}" for c in k.checks),
        soft_wrap=True,
    )


def kpis(
    service: Annotated[str | None, typer.Argument(help="Only this service.")] = None,
    env: Annotated[str | None, typer.Option("--env", "-e", help="Only this environment.")] = None,
    days: Annotated[float, typer.Option(help="Period: the last N days.", min=0.01)] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    config: ConfigOption = None,
) -> None:
    """Delivery KPIs per service and environment, against the seeds' targets."""
    from zerodown.config import load_config

    loaded = load_config(config)
    if service is not None and service not in loaded.config.services:
        raise ConfigError(f"unknown service {service!r}", path=str(loaded.path), field="services")
    groups = [(s, e) for s in loaded.config.services for e in loaded.config.environments]

    from zerodown.server.kpis import compute_kpis

    async def work(store: SqlHistoryStore) -> list[ServiceKpis]:
        return await compute_kpis(
            store.engine, days=days, service=service, environment=env, groups=groups
        )

    found = _with_store(config, work)
    if as_json:
        data: list[dict[str, Any]] = [k.to_dict() for k in found]
        print(json.dumps(data, indent=2, default=str))
        return
    for k in found:
        _print_kpis(k)


def register(app: typer.Typer) -> None:
    """Add `token` and `kpis` to the main application."""
    app.add_typer(token_app, name="token")
    app.command()(kpis)
