"""Live progress of a deployment in the terminal: one line per step, as it happens."""

from __future__ import annotations

import time

from rich.console import Console

from zerodown.engine.events import DeploymentEvent, EventKind
from zerodown.secrets.masking import global_masker

_STYLE = {
    EventKind.STATE: "bold",
    EventKind.DECISION: "yellow",
    EventKind.BATCH_STARTED: "bold cyan",
    EventKind.BATCH_FINISHED: "cyan",
    EventKind.INSTANCE_HEALTHY: "green",
    EventKind.INSTANCE_FAILED: "bold red",
    EventKind.TRAFFIC_ADDED: "green",
    EventKind.ROLLBACK_STARTED: "bold red",
    EventKind.ROLLBACK_FINISHED: "bold yellow",
    EventKind.HOOK_OUTPUT: "dim",
}


class ConsoleProgress:
    """A `DeploymentObserver` that prints each event with the time since the deployment began."""

    def __init__(self, console: Console, *, verbose: bool = False) -> None:
        self.console = console
        self.verbose = verbose
        self.started = time.monotonic()

    async def on_event(self, event: DeploymentEvent) -> None:
        if not self.verbose and self._routine(event):
            return
        style = _STYLE.get(event.kind, "")
        offset = time.monotonic() - self.started
        # masked again here: events from `zerodown serve` or a replayed history pass through too
        text = global_masker().mask(event.message).replace("[", "\\[")
        self.console.print(
            f"[dim]{offset:7.2f}s[/dim] [{style}]{text}[/{style}]"
            if style
            else f"[dim]{offset:7.2f}s[/dim] {text}",
            soft_wrap=True,
        )

    @staticmethod
    def _routine(event: DeploymentEvent) -> bool:
        """Events only `--verbose` shows: passing probes, "connection refused" while an instance
        boots (expected), and hook output lines."""
        if event.kind is EventKind.HOOK_OUTPUT:
            return True
        if event.kind is not EventKind.HEALTH_PROBE:
            return False
        return bool(event.data.get("ok", True)) or "refused" in str(event.data.get("detail", ""))
