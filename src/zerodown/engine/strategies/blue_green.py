"""blue-green: start the whole green fleet on a preview route, verify it, switch all traffic in one
atomic router step, and keep blue warm (weight 0) for `rollback_window` so a rollback is a flip.

Blue's instances carry the router label `warm_until=<unix time>`; once it passes,
`reap_expired_blue` (called by `zerodown serve`'s periodic loop and by the next command) drains
and stops them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from zerodown.domain.events import EventKind
from zerodown.domain.routes import parse_route_name
from zerodown.engine.fleet import DEFAULT_WEIGHT, FleetMember, run_all
from zerodown.engine.strategies.base import (
    BatchTimer,
    StrategyContext,
    admit_all,
    install,
    register,
    retire_all,
    start_new,
)
from zerodown.errors import InstanceNotFound, RouterError, RuntimeBackendError
from zerodown.routers.base import Router, TargetHealth, TargetSpec
from zerodown.runtimes.base import Runtime

log = logging.getLogger(__name__)

WARM_UNTIL = "warm_until"  # router label: unix time after which a warm (weight 0) target goes


@register("blue-green")
class BlueGreenStrategy:
    """Green starts in full beside blue, takes preview traffic, then all traffic at once."""

    name = "blue-green"

    async def run(self, ctx: StrategyContext) -> None:
        """Deploy green (or flip back to a still-warm fleet of this revision); raise on failure."""
        serving = [m for m in ctx.old if m.serving]
        warm = _warm_of(ctx.old, ctx.release.sha)
        if len(warm) >= ctx.wanted and serving:
            await self._flip_to_warm(ctx, warm[: ctx.wanted], serving)
            return
        if not serving:
            await ctx.fleet.sink.emit(
                EventKind.DECISION,
                "blue-green: nothing serves yet, so there is no blue: green takes traffic at once",
                {"strategy": self.name},
            )
        green = await self._start_green(ctx, preview=bool(serving))
        if serving:
            await self._verify_preview(ctx)
            await switch_traffic(ctx, green, serving)
        else:
            await admit_all(ctx, green, "1/1")
        await keep_warm(ctx, serving)
        # Anything else of the old fleet (an older warm fleet, stopped leftovers) goes now.
        await retire_all(ctx, ctx.take_old(len(ctx.old)))

    async def _start_green(self, ctx: StrategyContext, *, preview: bool) -> list[FleetMember]:
        ids = [ctx.fleet.new_instance_id(ctx.release.sha) for _ in range(ctx.wanted)]
        batch = await BatchTimer(ctx, 1, 1, ids).start()
        ok = False
        try:
            await install(ctx, ids, batch.label)
            green = await start_new(ctx, ids, batch.label, start_hook_first=False)
            if preview:
                await run_all(ctx.fleet.admit(m, preview=True) for m in green)
            ok = True
            return green
        finally:
            await batch.finish(ok)

    async def _verify_preview(self, ctx: StrategyContext) -> None:
        header = ctx.config.preview_header
        await ctx.fleet.sink.emit(
            EventKind.DECISION,
            f"green is on the preview route: requests with `{header}: 1` reach only green",
            {"preview_header": header, "route": ctx.fleet.route_name},
        )
        # The same verifiers run again once green serves live traffic (the deployer runs them
        # after every strategy): a bake window only means something then.
        if ctx.deployment is not None:
            for verifier in ctx.verifiers:
                await verifier.verify(ctx.deployment)

    async def _flip_to_warm(
        self, ctx: StrategyContext, warm: list[FleetMember], serving: list[FleetMember]
    ) -> None:
        await ctx.fleet.sink.emit(
            EventKind.DECISION,
            f"{len(warm)} instance(s) of {ctx.release.sha[:12]} are still warm: "
            "switching traffic back to them (no instance starts)",
            {"warm": [m.instance_id for m in warm]},
        )
        await switch_traffic(ctx, warm, serving)
        await keep_warm(ctx, serving)
        keep = {m.instance_id for m in warm}
        await retire_all(ctx, [m for m in ctx.take_old(len(ctx.old)) if m.instance_id not in keep])


def _warm_of(members: Sequence[FleetMember], revision: str) -> list[FleetMember]:
    return [
        m
        for m in members
        if m.warm
        and not m.preview
        and m.revision == revision
        and m.router_health is not TargetHealth.UNHEALTHY
    ]


async def switch_traffic(
    ctx: StrategyContext, new: Sequence[FleetMember], old: Sequence[FleetMember]
) -> None:
    """All live traffic to `new`, none to `old`, in one atomic router step."""
    fleet = ctx.fleet
    await ctx.hook("BeforeAllowTraffic", new, "1/1")
    # Out of the preview pool at weight 0 first: harmless, so the one `set_weights` is the switch.
    await run_all(fleet.admit(m, weight=0) for m in new if m.preview or not m.in_router)
    weights = {m.instance_id: DEFAULT_WEIGHT for m in new} | {m.instance_id: 0 for m in old}
    await fleet.router.set_weights(fleet.route_name, weights)
    await fleet.sink.emit(
        EventKind.STEP,
        f"switched all traffic to {len(new)} instance(s) of {ctx.release.sha[:12]} "
        f"in one step ({len(old)} instance(s) out of rotation)",
        {"weight": 100, "weights": weights},
    )
    await ctx.hook("AfterAllowTraffic", new, "1/1")


async def keep_warm(ctx: StrategyContext, blue: Sequence[FleetMember]) -> None:
    """Keep the old fleet at weight 0 for `rollback_window` (retire it now when that is 0)."""
    fleet = ctx.fleet
    window = ctx.config.rollback_window
    if not blue:
        return
    for member in blue:
        ctx.old = [m for m in ctx.old if m.instance_id != member.instance_id]
    if window <= 0:
        await retire_all(ctx, blue)
        return
    until = fleet.clock.time() + window
    for member in blue:
        await fleet.router.add_target(
            TargetSpec(
                service=fleet.route_name,
                target_id=member.instance_id,
                host=member.host,
                port=member.port,
                revision=member.revision,
                weight=0,
                labels=fleet.labels(member.revision)
                | {"deployment": member.deployment or "", WARM_UNTIL: f"{until:.3f}"},
            )
        )
    await fleet.sink.emit(
        EventKind.DECISION,
        f"blue ({len(blue)} instance(s) of {blue[0].revision[:12]}) stays warm for "
        f"{window:g} s: `zerodown rollback` until then only flips traffic",
        {"warm": [m.instance_id for m in blue], "warm_until": until},
    )


async def reap_expired_blue(
    router: Router, runtime: Runtime, *, now: float, store: Any | None = None
) -> list[str]:
    """Drain and stop warm fleets whose rollback window has passed; return their instance ids.

    Skips a route while a deployment of it holds the lock (when `store` is given): that
    deployment decides about its fleet. Failures are logged, never raised (housekeeping).
    """
    reaped: list[str] = []
    try:
        routes = await router.status()
    except RouterError as exc:
        log.warning("cannot list routes to reap expired blue fleets: %s", exc)
        return reaped
    for route in routes:
        expired = [
            t
            for t in route.targets
            if t.spec.weight == 0
            and not t.draining
            and _expired(t.spec.labels.get(WARM_UNTIL), now)
        ]
        if not expired:
            continue
        service, environment = parse_route_name(route.route.service)
        if store is not None and await store.lock_holder(service, environment) is not None:
            continue
        for target in expired:
            try:
                await router.drain_target(route.route.service, target.spec.target_id)
                try:
                    await runtime.stop(target.spec.target_id)
                    await runtime.remove(target.spec.target_id)
                except InstanceNotFound:
                    pass
                reaped.append(target.spec.target_id)
            except (RouterError, RuntimeBackendError) as exc:
                log.warning("could not reap %s: %s", target.spec.target_id, exc)
    return reaped


def _expired(label: str | None, now: float) -> bool:
    if label is None:
        return False
    try:
        return float(label) <= now
    except ValueError:
        return False
