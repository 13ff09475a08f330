"""`BakeWindow`: after the new revision serves everything, wait while the alarms keep watching."""

from __future__ import annotations

from zerodown.clock import Clock, SystemClock
from zerodown.domain.events import EventKind
from zerodown.engine.extensions import DeploymentContext

PROD_BAKE = 300.0  # seconds, for an environment named prod without `bake_window`


def bake_seconds(environment_name: str, configured: float | None) -> float:
    """The bake window: as configured, else 5 min for prod and 0 elsewhere."""
    if configured is not None:
        return configured
    return PROD_BAKE if environment_name == "prod" else 0.0


class BakeWindow:
    """A `Verifier` that holds the deployment open for the bake window (the `AlarmGuard` keeps
    evaluating meanwhile and fails it on ALARM)."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()

    async def verify(self, ctx: DeploymentContext) -> None:
        """Wait the window out, recording when it starts and ends."""
        if not getattr(ctx.environment, "alarms", None) or ctx.record.kind == "rollback":
            return  # nothing would watch (a rollback is not judged by alarms): nothing to bake
        seconds = bake_seconds(
            ctx.record.environment, getattr(ctx.environment, "bake_window", None)
        )
        if seconds <= 0 or await _on_preview(ctx):
            return  # blue/green verifies green on its preview first: bake once it serves live
        await ctx.emit(
            EventKind.DECISION,
            f"bake window: watching the alarms for {seconds:g} s before calling it a success",
            {"bake_window": seconds},
        )
        await self.clock.sleep(seconds)
        await ctx.emit(
            EventKind.DECISION,
            f"bake window of {seconds:g} s passed without an alarm",
            {"bake_window": seconds, "passed": True},
        )


async def _on_preview(ctx: DeploymentContext) -> bool:
    """True while the deployment's new instances only serve the preview route (blue/green)."""
    new = {info.instance_id for info in await ctx.new_instances()}
    for route in await ctx.router.status(ctx.route):
        for target in route.targets:
            if target.spec.target_id in new and not target.spec.preview:
                return False
    return bool(new)
