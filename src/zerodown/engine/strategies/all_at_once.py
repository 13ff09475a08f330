"""all-at-once: stop the whole old fleet, then start the whole new one (dev: downtime allowed)."""

from __future__ import annotations

from zerodown.domain.events import EventKind
from zerodown.engine.strategies.base import (
    BatchTimer,
    StrategyContext,
    admit_all,
    install,
    register,
    retire_all,
    start_new,
)


@register("all-at-once")
class AllAtOnceStrategy:
    """One batch: ApplicationStop, retire all old, install, start all new, health, admit."""

    name = "all-at-once"

    async def run(self, ctx: StrategyContext) -> None:
        """Replace every instance at once; requests fail while no instance is healthy."""
        fleet = ctx.fleet
        if ctx.old:
            await fleet.sink.emit(
                EventKind.DECISION,
                "all-at-once: requests fail until the new instances are healthy",
                {"strategy": self.name, "downtime": True},
            )
        ids = [fleet.new_instance_id(ctx.release.sha) for _ in range(ctx.wanted)]
        batch = await BatchTimer(ctx, 1, 1, ids).start()
        ok = False
        try:
            old = ctx.take_old(len(ctx.old))
            await ctx.hook("ApplicationStop", old, batch.label)
            await retire_all(ctx, old)
            await install(ctx, ids, batch.label)
            members = await start_new(ctx, ids, batch.label, start_hook_first=False)
            await admit_all(ctx, members, batch.label)
            ok = True
        finally:
            await batch.finish(ok)
