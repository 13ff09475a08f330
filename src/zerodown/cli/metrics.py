"""`zerodown metrics` and `zerodown alarms`: what the router measures now, and the alarms' states
and history."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from zerodown.cli.console import lazy_console
from zerodown.domain.routes import route_name
from zerodown.errors import ConfigError

if TYPE_CHECKING:  # imported where used, so that the CLI starts fast
    from zerodown.control_plane import ControlPlane

console = lazy_console(highlight=False)
T = TypeVar("T")
WINDOW = 60.0  # seconds `zerodown metrics` averages over

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="zerodown.yml (default: search upwards).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
EnvFilter = Annotated[str | None, typer.Option("--env", "-e", help="Only this environment.")]


def _with_plane(config: Path | None, work: Callable[[ControlPlane], Awaitable[T]]) -> T:
    from zerodown.config import load_config
    from zerodown.control_plane import ControlPlane

    loaded = load_config(config)

    async def main() -> T:
        plane = await ControlPlane.open(loaded, recover=False)
        try:
            return await work(plane)
        finally:
            await plane.close()

    return asyncio.run(main())


async def _measured_report(plane: ControlPlane, since: float | None) -> dict[str, Any]:
    source = plane.metrics
    if not source.measures:
        raise ConfigError(f"{source.measured_by} does not measure traffic")
    return await source.report(since=since)


def _routes(plane: ControlPlane, service: str | None, env: str | None) -> list[tuple[str, str]]:
    config = plane.loaded.config
    if service is not None and service not in config.services:
        raise ConfigError(f"unknown service {service!r}", field="SERVICE")
    if env is not None and env not in config.environments:
        raise ConfigError(f"unknown environment {env!r}", field="--env")
    return [
        (name, environment)
        for name in config.services
        for environment in config.environments
        if (service is None or name == service) and (env is None or environment == env)
    ]


def metrics(
    service: Annotated[str | None, typer.Argument(help="Only this service.")] = None,
    env: EnvFilter = None,
    window: Annotated[float, typer.Option(help="Seconds to average over.")] = WINDOW,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Request rate, 5xx and latency percentiles per revision, over the last minute."""
    from rich.table import Table

    from zerodown.metrics.series import aggregate

    async def work(plane: ControlPlane) -> list[dict[str, Any]]:
        wanted = _routes(plane, service, env)
        data = await _measured_report(plane, None)
        now = float(data["now"])
        rows = []
        for name, environment in wanted:
            route = route_name(name, environment)
            points = [p for p in data["datapoints"] if p["service"] == route]
            for group in aggregate(points, by=("revision",), since=now - window):
                row = group.to_json()
                row.update(service=name, environment=environment)
                row["rate"] = round(group.requests / window, 2)
                rows.append(row)
        return rows

    rows = _with_plane(config, work)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print(f"no traffic in the last {window:g} s")
        return
    table = Table("service", "env", "revision", "req/s", "5xx", "err %", "p50", "p95", "p99")
    for row in rows:
        latency = row["latency_ms"]
        table.add_row(
            row["service"],
            row["environment"],
            str(row["revision"])[:12],
            f"{row['rate']:g}",
            str(row["5xx"]),
            f"{100 * row['error_rate']:.1f}",
            *(_ms(latency[k]) for k in ("p50", "p95", "p99")),
        )
    console.print(table)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def alarms(
    env: EnvFilter = None,
    limit: Annotated[int, typer.Option(help="History entries to show.")] = 20,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Every alarm's state now (judged on the router's metrics) and the recent transitions."""
    from rich.table import Table

    from zerodown.alarms.evaluate import AlarmEvaluator
    from zerodown.alarms.history import alarm_history

    config_file: list[Path] = []  # for the hint when nothing is configured

    async def work(plane: ControlPlane) -> dict[str, Any]:
        config_file.append(plane.loaded.path)
        wanted = _routes(plane, None, env)
        data = await _measured_report(plane, None)
        states = []
        for name, environment in wanted:
            for alarm in plane.loaded.config.environments[environment].alarms:
                evaluator = AlarmEvaluator(alarm.to_definition())
                evaluator.evaluate(data, route_name(name, environment))
                states.append(
                    {
                        "service": name,
                        "environment": environment,
                        "alarm": alarm.name,
                        "state": evaluator.state.value,
                        "condition": evaluator.alarm.describe(),
                        "datapoints": list(evaluator.last_values),
                        "reason": evaluator.history[-1].reason if evaluator.history else "",
                    }
                )
        engine = plane.store.sql_engine()
        history = await alarm_history(engine, environment=env, limit=limit) if engine else []
        return {"alarms": states, "history": [h.to_json() for h in history]}

    result = _with_plane(config, work)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    if not result["alarms"]:
        # markup off: rich would take "[{preset: seed}]" for a style tag and print nothing of it
        where = f"environment {env!r}" if env else "an environment"
        console.print(
            f"no alarms configured: add `alarms: [{{preset: seed}}]` to {where} in "
            f"{config_file[0].name if config_file else 'zerodown.yml'} (the four seed alarms)",
            markup=False,
            soft_wrap=True,
        )
    else:
        table = Table("service", "env", "alarm", "state", "condition")
        for item in result["alarms"]:
            color = {"ALARM": "red", "OK": "green"}.get(item["state"], "yellow")
            table.add_row(
                item["service"],
                item["environment"],
                item["alarm"],
                f"[{color}]{item['state']}[/{color}]",
                item["condition"],
            )
        console.print(table)
    for entry in result["history"]:
        when = datetime.fromtimestamp(entry["at"]).strftime("%Y-%m-%d %H:%M:%S")
        console.print(
            f"{when} {entry['environment']} {entry['service']} {entry['alarm']}: "
            f"{entry['old_state']} -> {entry['new_state']} ({entry['reason']})"
        )


def register(app: typer.Typer) -> None:
    """Add `metrics` and `alarms` to the CLI."""
    app.command(name="metrics")(metrics)
    app.command(name="alarms")(alarms)
