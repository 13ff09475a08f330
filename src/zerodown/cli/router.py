"""`zerodown router ...`: run, start, restart, stop and inspect the built-in router.

A thin wrapper: the work is in `zerodown.routers.builtin.{daemon,client}`. Known failures print one
red line and exit with the error's code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from zerodown.cli.console import lazy_console
from zerodown.errors import ConfigError, ZerodownError

router_app = typer.Typer(help="The built-in router: a reverse proxy that never drops a request.")
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


def _where(state_dir: Path | None, listen: list[str] | None) -> tuple[Path, list[str]]:
    """State dir and listen addresses: flags, else the nearest zerodown.yml, else the defaults."""
    from zerodown.config import load_config

    if state_dir is not None:
        return state_dir, listen or [DEFAULT_LISTEN]
    try:
        loaded = load_config()
    except ConfigError as exc:
        if exc.path and Path(exc.path).exists():
            raise  # a zerodown.yml that is broken must be fixed, not ignored
        return DEFAULT_STATE_DIR, listen or [DEFAULT_LISTEN]
    from zerodown.config.routes import router_addresses

    return loaded.state_dir, listen or router_addresses(loaded.config)  # every environment's


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

    where, addresses = _where(state_dir, listen)
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


def _configured_workers(state_dir: Path | None) -> int:
    """`router.workers` of the nearest zerodown.yml when no --state-dir says where to look."""
    from zerodown.config import load_config

    if state_dir is not None:
        return 1
    try:
        return load_config().config.router.workers
    except ConfigError:
        return 1  # _where has already refused a broken zerodown.yml


@router_app.command()
def start(
    state_dir: StateDir = None, listen: Listen = None, grace: Grace = 30.0, workers: Workers = None
) -> None:
    """Start the router in the background unless one is running."""
    from zerodown.routers.builtin.client import ensure_router

    where, addresses = _where(state_dir, listen)
    count = workers or _configured_workers(state_dir)
    if count > 1:
        from zerodown.routers.builtin.pool import ensure_pool

        infos = _run(ensure_pool(where, addresses, count, grace=grace))
        pids = ", ".join(str(info["pid"]) for info in infos)
        console.print(f"router pids {pids} listening on {', '.join(infos[0]['listen'])}")
        return
    info = _run(ensure_router(where, addresses, grace=grace))
    console.print(f"router pid {info['pid']} listening on {', '.join(info['listen'])}")


@router_app.command()
def restart(state_dir: StateDir = None) -> None:
    """Replace the running router with a new process without dropping a connection."""
    from zerodown.routers.builtin.client import restart_router
    from zerodown.routers.builtin.pool import restart_pool, running_workers

    where = _where(state_dir, None)[0]
    if running_workers(where) > 1:  # every worker in turn, each hitless
        for info in _run(restart_pool(where)):
            console.print(f"router pid {info['pid']} took over on {', '.join(info['listen'])}")
        return
    info = _run(restart_router(where))
    console.print(f"router pid {info['pid']} took over on {', '.join(info['listen'])}")


@router_app.command()
def stop(state_dir: StateDir = None) -> None:
    """Stop the router (every worker), letting open connections finish within its grace period."""
    from zerodown.routers.builtin.client import stop_router
    from zerodown.routers.builtin.pool import running_workers, stop_pool

    where = _where(state_dir, None)[0]
    if running_workers(where) > 1:
        pids = _run(stop_pool(where))
        console.print(f"router pids {', '.join(map(str, pids))} stopped")
        return
    pid = _run(stop_router(where))
    console.print("no router was running" if pid is None else f"router pid {pid} stopped")


@router_app.command()
def status(state_dir: StateDir = None) -> None:
    """Show the router's routes and targets."""
    from rich.table import Table

    from zerodown.routers.builtin.client import BuiltinRouter

    where = _where(state_dir, None)[0]

    async def gather() -> tuple[dict[str, Any], list[Any]]:
        from zerodown.routers.builtin.pool import WorkerPoolRouter, running_workers

        count = running_workers(where)  # a pool: the workers' merged view
        router = WorkerPoolRouter(where, count) if count > 1 else BuiltinRouter(where)
        return await router.ping(), await router.status()

    info, routes = _run(gather())
    console.print(
        f"router pid {info['pid']} (v{info['version']}, up {info['uptime']:.0f} s) "
        f"on {', '.join(info['listen'])}"
    )
    if "workers" in info:  # a pool: worker 0 above, then every worker
        console.print(f"{len(info['workers'])} workers: pids {[w['pid'] for w in info['workers']]}")
    table = Table("service", "target", "address", "revision", "weight", "health", "in flight")
    for route in routes:
        for target in route.targets:
            health = target.health.value + (" (draining)" if target.draining else "")
            table.add_row(
                route.route.service,
                target.spec.target_id,
                target.spec.address,
                target.spec.revision,
                str(target.spec.weight),
                health,
                str(target.inflight),
            )
        if not route.targets:
            table.add_row(route.route.service, "-", "-", "-", "-", "-", "-")
    console.print(table)


__all__ = ["router_app"]
