"""What the CLI answers before it loads anything heavy: `version`, and `status` through a
running `zerodown serve`.

`zerodown status` through serve should answer in well under half a second; typer (which loads
pydantic to convert arguments), validating zerodown.yml and opening the history (SQLAlchemy)
would take most of that. serve validates the file itself, so here the state directory is only
read from it. Nothing here imports typer.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from zerodown.cli.console import lazy_console
from zerodown.errors import ConfigError

console = lazy_console(highlight=False)


def answer_without_typer(args: list[str]) -> bool:
    """Answer `version` and `status [--json]` (through a running serve) at once; False when the
    full command line must handle it (any other command, option, or no serve)."""
    if args == ["version"]:
        from zerodown import __version__

        print(f"zerodown {__version__}")
        return True
    if args[:1] == ["status"] and set(args[1:]) <= {"--json"}:
        views = status_through_serve(None)
        if views is None:
            return False
        print_status(views, as_json="--json" in args)
        return True
    return False


CONFIG_FILE = "zerodown.yml"  # zerodown.config.loader.DEFAULT_FILE, without importing it


def state_dir_hint(config: Path | None) -> Path | None:
    """The state dir zerodown.yml (given, or the nearest one upwards) names, honouring
    ZERODOWN_STATE_DIR; None when there is no readable file (the full load says why)."""
    path = config if config is not None else _nearest(Path.cwd().resolve())
    if path is None:
        return None
    try:
        import yaml

        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    configured = data.get("state_dir", ".zerodown") if isinstance(data, dict) else ".zerodown"
    state_dir = os.environ.get("ZERODOWN_STATE_DIR") or configured
    if not isinstance(state_dir, str):
        return None
    return (path.resolve().parent / state_dir).resolve()


def _nearest(here: Path) -> Path | None:
    for directory in (here, *here.parents):
        candidate = directory / CONFIG_FILE
        if candidate.is_file():
            return candidate
    return None


def print_status(views: list[dict[str, Any]], *, as_json: bool) -> None:
    """`zerodown status` from the fleet views (the API's shape, the same with or without serve)."""
    if as_json:
        print(json.dumps(views, indent=2))
        return
    from rich.table import Table

    for view in views:
        where = f"{view['service']}/{view['environment']}"
        if view.get("orphan"):
            console.print(
                f"[bold yellow]{where}[/bold yellow]  orphaned: not in zerodown.yml, "
                f"{len(view['instances'])} instance(s) still running"
                f"{' and a route' if view['route'] else ''}; stop them with `{view['stop']}`",
                soft_wrap=True,
            )
            continue
        last = view["last_deployment"]
        served = ", ".join(view.get("listen") or ()) or "any address"
        console.print(
            f"[bold]{where}[/bold] on {served}  revision {view['revision_label'] or '-'}  "
            f"healthy {view['healthy']}"
            + (f"  last: {last['state']} {last['revision_label']}" if last else "")
            + (f" ({_one_line(last['reason'])})" if last and last["reason"] else ""),
            soft_wrap=True,
        )
        if not view["targets"]:
            continue
        table = Table(box=None, pad_edge=False)
        for column in ("instance", "address", "revision", "health", "weight", "in-flight"):
            table.add_column(column)
        for t in view["targets"]:
            table.add_row(
                t["instance"],
                t["address"],
                t["revision_label"],
                t["health"] + (" (draining)" if t["draining"] else ""),
                str(t["weight"]),
                str(t["inflight"]),
            )
        console.print(table)


def _one_line(reason: str, width: int = 100) -> str:
    """A reason as one short line (the whole one: `history --wide`)."""
    first = reason.split("\n", 1)[0]
    return first if len(first) <= width and "\n" not in reason else first[: width - 1] + "…"


def status_through_serve(config: Path | None) -> list[dict[str, Any]] | None:
    """The status from a running `zerodown serve`, without loading the engine here (fast);
    None when no serve answers for this zerodown.yml's state dir."""
    from zerodown.server.socket_api import call, socket_path

    state_dir = state_dir_hint(config)
    if state_dir is None or not socket_path(state_dir).exists():
        return None

    async def ask() -> list[dict[str, Any]] | None:
        async with asyncio.timeout(10):
            async for answer in call(state_dir, {"op": "status"}):
                if answer.get("ok"):
                    return list(answer["status"])
                if int(answer.get("exit_code", 1)) == 2:
                    raise ConfigError(str(answer["error"]))
                return None
        return None

    try:
        return asyncio.run(ask())
    except (OSError, TimeoutError, ValueError):
        return None  # a stale socket, a serve that stops: ask the store directly
