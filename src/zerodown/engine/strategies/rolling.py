"""rolling: replace the fleet batch by batch; with surge, new instances serve before old ones go."""

from __future__ import annotations

import asyncio

from zerodown.engine.strategies.base import (
    BatchTimer,
    StrategyContext,
    admit_all,
    install,
    register,
    retire_all,
    start_new,
)


@register("rolling")
class RollingStrategy:
    """Per batch: install hooks, start new, health, admit; old ones drain before or after.

    With surge (the default) a batch's old instances are retired only once its new ones take
    traffic, so even a single instance is replaced without downtime; the batch is finished then.
    That retirement overlaps the next batch's boot (at most one batch drains at a time): the old
    instances are already out of rotation, and the deploy does not wait for them before starting
    the next boot.
    Without surge a batch retires its old instances first; `min_healthy` bounds the batch.
    """

    name = "rolling"

    async def run(self, ctx: StrategyContext) -> None:
        """Replace the fleet; raise on the first failure."""
        if ctx.config.surge:
            await self._with_surge(ctx)
        else:
            await self._without_surge(ctx)
        # More old instances than wanted (a scale-down): they go last.
        await retire_all(ctx, ctx.take_old(len(ctx.old)))

    async def _with_surge(self, ctx: StrategyContext) -> None:
        sizes = await ctx.batches(surge=True)
        retiring: asyncio.Future[None] | None = None
        try:
            for number, size in enumerate(sizes, start=1):
                ids = [ctx.fleet.new_instance_id(ctx.release.sha) for _ in range(size)]
                batch = await BatchTimer(ctx, number, len(sizes), ids).start()
                try:
                    await install(ctx, ids, batch.label)
                    members = await start_new(ctx, ids, batch.label, start_hook_first=False)
                    await admit_all(ctx, members, batch.label)
                    if retiring is not None:  # at most one batch drains at a time
                        await retiring
                except BaseException:
                    await batch.finish(False)
                    raise
                # The batch ends when its new instances serve: its old ones, out of rotation,
                # drain while the next batch boots. Finishing it only after that drain put
                # "batch 2/2" before "batch 1/2 finished" in the history and on the terminal.
                old = ctx.take_old(size)
                await batch.finish(True, retiring=old)
                retiring = asyncio.ensure_future(retire_all(ctx, old))
            if retiring is not None:
                await retiring
        except BaseException:
            if retiring is not None and not retiring.done():
                # These instances are already out of rotation: let their drain finish rather
                # than leave them half-drained for the rollback.
                await asyncio.wait([retiring])
            raise

    async def _without_surge(self, ctx: StrategyContext) -> None:
        sizes = await ctx.batches(surge=False)
        for number, size in enumerate(sizes, start=1):
            ids = [ctx.fleet.new_instance_id(ctx.release.sha) for _ in range(size)]
            batch = await BatchTimer(ctx, number, len(sizes), ids).start()
            ok = False
            try:
                await retire_all(ctx, ctx.take_old(size))
                await install(ctx, ids, batch.label)
                members = await start_new(ctx, ids, batch.label, start_hook_first=False)
                await admit_all(ctx, members, batch.label)
                ok = True
            finally:
                await batch.finish(ok)
