"""`zerodown router ...`: start, restart, stop and inspect the configured router (`run`: the
built-in one in the foreground).

A thin wrapper over the router backend (`zerodown.routers.registry`). Known failures print one
red line and exit with the error's code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from zerodown.cli.console import lazy_console
from zerodown.errors import ConfigError, ZerodownError

if TYPE_CHECKING:
    from zerodown.config.router import BuiltinRouterConfig, HaproxyRouterConfig
    from zerodown.routers.base import RouterBackend

    RouterSettings = BuiltinRouterConfig | HaproxyRouterConfig

router_app = typer.Typer(
    help="The router (built-in or HAProxy): traffic that never drops a request."
)
console = lazy_console()
errors = lazy_console(stderr=True)

T = TypeVar("T")

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="ZERODOWN_STATE_DIR",
        help="zerodown's state directory (default: from zerodown.yml, else .zerodown).",
    ),
]
Listen = Annotated[
    list[str] | None,
    typer.Option("--listen", "-l", help="host:port to serve traffic on (repeatable)."),
]
Grace = Annotated[
    float, typer.Option("--grace", help="Seconds to let connections finish when stopping.")
]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        max=16,
        help="Router processes sharing the addresses (default: router.workers, else 1).",
    ),
]
DEFAULT_STATE_DIR = Path(".zerodown")
DEFAULT_LISTEN = "127.0.0.1:8080"


def _where(
    state_dir: Path | None, listen: list[str] | None
) -> tuple[Path, list[str], RouterSettings]:
    """State dir, listen addresses and router settings: flags, else the nearest zerodown.yml,
    else the defaults (the built-in router)."""
    from zerodown.config import load_config
    from zerodown.config.router import BuiltinRouterConfig
    from zerodown.config.routes import router_addresses

    if state_dir is not None:
        return state_dir, listen or [DEFAULT_LISTEN], BuiltinRouterConfig()
    try:
        loaded = load_config()
    except ConfigError as exc:
        if exc.path and Path(exc.path).exists():
            raise  # a zerodown.yml that is broken must be fixed, not ignored
        return DEFAULT_STATE_DIR, listen or [DEFAULT_LISTEN], BuiltinRouterConfig()
    # every environment's address
    return loaded.state_dir, listen or router_addresses(loaded.config), loaded.config.router


def _backend(settings: RouterSettings) -> RouterBackend:
    from zerodown.routers.registry import router_backend

    return router_backend(settings)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except ZerodownError as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(exc.exit_code) from None


@router_app.command()
def run(
    state_dir: StateDir = None,
    listen: Listen = None,
    grace: Annotated[
        float | None, typer.Option(help="Drain seconds (default 30, or the old router's).")
    ] = None,
    takeover: Annotated[bool, typer.Option(help="Take over from the running router.")] = False,
) -> None:
    """Run the router in the foreground (what `start` runs in the background)."""
    from zerodown.routers.builtin.daemon import main  # the proxy loads only here

    where, addresses, settings = _where(state_dir, listen)
    if settings.backend != "builtin":
        raise ConfigError(
            f"`zerodown router run` runs the built-in router in the foreground; this project's "
            f"router is {settings.backend}: use `zerodown router start`",
            field="router.backend",
        )
    args = ["--state-dir", str(where)]
    if grace is not None:
        args += ["--grace", str(grace)]
    for address in [] if takeover and not listen else addresses:
        args += ["--listen", address]
    if takeover:
        args.append("--takeover")
    code = main(args)
    if code:
        raise typer.Exit(code)


@router_app.command()
def start(
    state_dir: StateDir = None, listen: Listen = None, grace: Grace = 30.0, workers: Workers = None
) -> None:
    """Start the router in the background unless one is running (binding missing addresses)."""
    where, addresses, settings = _where(state_dir, listen)
    if settings.backend == "builtin":  # the built-in router's own flags
        changes: dict[str, Any] = {"grace": grace}
        if workers is not None:
            changes["workers"] = workers
        settings = settings.model_copy(update=changes)
    backend = _backend(settings)

    async def begin() -> list[dict[str, Any]]:
        await backend.open(where, addresses)
        return await backend.describe(where)

    _print_processes(_run(begin()), "listening on")


@router_app.command()
def restart(state_dir: StateDir = None) -> None:
    """Replace the running router without dropping a connection (HAProxy: a hitless reload)."""
    where, _, settings = _where(state_dir, None)
    backend = _backend(settings)

    async def again() -> list[dict[str, Any]]:
        await backend.restart(where)
        return await backend.describe(where)

    _print_processes(_run(again()), "took over on")


@router_app.command()
def stop(state_dir: StateDir = None) -> None:
    """Stop the router (every worker), letting open connections finish within its grace period."""
    where, _, settings = _where(state_dir, None)
    pids = _run(_backend(settings).stop(where))
    console.print(
        f"router pid(s) {', '.join(map(str, pids))} stopped" if pids else "no router was running"
    )


@router_app.command()
def status(state_dir: StateDir = None) -> None:
    """Show the router's processes, routes and targets."""
    from rich.table import Table

    from zerodown.errors import RouterUnavailable

    where, _, settings = _where(state_dir, None)
    backend = _backend(settings)

    async def gather() -> tuple[list[dict[str, Any]], list[Any]]:
        processes = await backend.describe(where)
        if not processes:
            raise RouterUnavailable(
                f"no {backend.name} router answers for {where}: "
                "start it with `zerodown router start`"
            )
        router = await backend.open(where, [])  # running: nothing is started
        return processes, await router.status()

    processes, routes = _run(gather())
    _print_processes(processes, "on")
    table = Table(
        "service", "target", "address", "revision", "pool", "weight", "health", "in flight"
    )
    for route in routes:
        weights = route.target_weights()  # a pool's weight split among its healthy targets
        for target in route.targets:
            health = target.health.value + (" (draining)" if target.draining else "")
            table.add_row(
                route.route.service,
                target.spec.target_id,
                target.spec.address,
                target.spec.revision,
                target.spec.pool,
                f"{weights[target.spec.target_id]:g}",
                health,
                str(target.inflight),
            )
        if not route.targets:
            table.add_row(route.route.service, "-", "-", "-", "-", "-", "-", "-")
    console.print(table)


def _print_processes(processes: list[dict[str, Any]], verb: str) -> None:
    for info in processes:
        uptime = info.get("uptime")
        up = f"{uptime:.0f} s" if isinstance(uptime, int | float) else str(uptime)
        extra = f" (v{info['version']}, up {up})" if uptime is not None else ""
        role = f" {info['role']}" if info.get("role") else ""
        console.print(
            f"router pid {info['pid']}{role}{extra} {verb} {', '.join(info['listen'])}",
            soft_wrap=True,
        )


__all__ = ["router_app"]
