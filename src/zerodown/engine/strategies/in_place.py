"""in-place: CodeDeploy's lifecycle per batch, stopping old instances before starting new ones."""

from __future__ import annotations

from zerodown.engine.fleet import run_all
from zerodown.engine.strategies.base import (
    BatchTimer,
    StrategyContext,
    install,
    register,
    retire_all,
    start_new,
)


@register("in-place")
class InPlaceStrategy:
    """Per batch, in CodeDeploy's order; a hook named like a built-in step runs just before it.

    BeforeBlockTraffic, BlockTraffic (drain), AfterBlockTraffic, ApplicationStop (stop),
    BeforeInstall, Install, AfterInstall, ApplicationStart (start), health check,
    ValidateService, BeforeAllowTraffic, AllowTraffic (admit), AfterAllowTraffic.
    ValidateService runs after the health check, not before it: a validation script needs a
    running app, which is what CodeDeploy's own ValidateService sees.
    """

    name = "in-place"

    async def run(self, ctx: StrategyContext) -> None:
        """Replace the fleet batch by batch; `min_healthy` bounds how many are out at once."""
        fleet = ctx.fleet
        sizes = await ctx.batches(surge=False)
        for number, size in enumerate(sizes, start=1):
            ids = [fleet.new_instance_id(ctx.release.sha) for _ in range(size)]
            batch = await BatchTimer(ctx, number, len(sizes), ids).start()
            label = batch.label
            ok = False
            try:
                old = ctx.take_old(size)
                await ctx.hook("BeforeBlockTraffic", old, label)
                await ctx.hook("BlockTraffic", old, label)
                await run_all(fleet.drain(m) for m in old)
                await ctx.hook("AfterBlockTraffic", old, label)
                await ctx.hook("ApplicationStop", old, label)
                await run_all(fleet.stop(m) for m in old)
                await install(ctx, ids, label)
                members = await start_new(ctx, ids, label, start_hook_first=True)
                await ctx.hook("BeforeAllowTraffic", members, label)
                await ctx.hook("AllowTraffic", members, label)
                await run_all(fleet.admit(m) for m in members)
                await ctx.hook("AfterAllowTraffic", members, label)
                ok = True
            finally:
                await batch.finish(ok)
        # More old instances than wanted (a scale-down): they go last.
        await retire_all(ctx, ctx.take_old(len(ctx.old)))
