"""blue-green: start the whole green fleet on a preview route, verify it, switch all traffic in one
atomic router step, and keep blue warm (its pool at weight 0) for `rollback_window` so a rollback
is a flip.

How long blue stays warm is the engine's to know, not the router's: the deployment records it in
the history (a DECISION event whose data holds `warm` and `warm_until`), so a control plane
restarted after `kill -9` still finds it. Once it passes, `reap_expired_blue` (called by
`zerodown serve`'s periodic loop and by the next command) drains and stops blue.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from zerodown.domain.events import EventKind
from zerodown.domain.routes import parse_route_name
from zerodown.engine.fleet import DEFAULT_WEIGHT, FleetMember, pool_shares, run_all
from zerodown.engine.strategies.base import (
    BatchTimer,
    StrategyContext,
    admit_all,
    install,
    register,
    retire_all,
    start_new,
)
from zerodown.errors import InstanceNotFound, RouterError, RuntimeBackendError, StoreError
from zerodown.routers.base import Router, TargetHealth, TargetStatus
from zerodown.runtimes.base import Runtime
from zerodown.store.base import HistoryStore

log = logging.getLogger(__name__)

# keep_warm's DECISION event data: instances `warm` stay until `warm_until` (unix time)
WARM = "warm"
WARM_UNTIL = "warm_until"
WARM_LOOKBACK = 20  # newest deployments of a service x environment whose warm records count


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
                green = await run_all(ctx.fleet.admit(m, preview=True) for m in green)
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
    """All live traffic to `new`, none to `old`, in one atomic router step (`new` from the
    preview pool moves to a pool of its own first, at weight 0: harmless, so the one
    `set_pool_weights` is the switch)."""
    fleet = ctx.fleet
    await ctx.hook("BeforeAllowTraffic", new, "1/1")
    moving = [m for m in new if m.preview or not m.in_router]
    if moving:
        pool = fleet.new_pool(ctx.release.sha)
        await fleet.reserve_pool(pool)
        moved = {m.instance_id: m for m in await run_all(fleet.admit(m, pool=pool) for m in moving)}
        new = [moved.get(m.instance_id, m) for m in new]
    weights = pool_shares(new, DEFAULT_WEIGHT)
    weights |= {m.pool: 0 for m in old if m.pool not in weights}
    await fleet.router.set_pool_weights(fleet.route_name, weights)
    await fleet.sink.emit(
        EventKind.STEP,
        f"switched all traffic to {len(new)} instance(s) of {ctx.release.sha[:12]} "
        f"in one step ({len(old)} instance(s) out of rotation)",
        {"weight": 100, "pool_weights": weights},
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
    # Recorded in the history (emit waits for it): the reaper reads it there, after a restart too.
    await fleet.sink.emit(
        EventKind.DECISION,
        f"blue ({len(blue)} instance(s) of {blue[0].revision[:12]}) stays warm for "
        f"{window:g} s: `zerodown rollback` until then only flips traffic",
        {WARM: [m.instance_id for m in blue], WARM_UNTIL: until},
    )


@dataclass
class WarmRecords:
    """Until when each warm instance is kept, as blue/green deployments recorded it in the
    history (the newest record of an instance counts). Records of finished deployments never
    change, so each is read from the store once."""

    store: HistoryStore
    _finished: dict[str, dict[str, float]] = field(default_factory=dict)

    async def deadlines(self, service: str, environment: str) -> dict[str, float]:
        """instance id -> unix time its warm window ends, for one service x environment."""
        found: dict[str, float] = {}
        records = await self.store.list_deployments(
            service=service, environment=environment, limit=WARM_LOOKBACK
        )
        for record in records:  # newest first
            warm = self._finished.get(record.id)
            if warm is None:
                warm = await self._read(record.id)
                if record.state.terminal:
                    self._finished[record.id] = warm
            for instance_id, until in warm.items():
                found.setdefault(instance_id, until)
        return found

    async def _read(self, deployment_id: str) -> dict[str, float]:
        warm: dict[str, float] = {}
        for _, event in await self.store.events(deployment_id):
            data = event.data
            if event.kind is EventKind.DECISION and WARM_UNTIL in data and WARM in data:
                with_ids = data[WARM] if isinstance(data[WARM], list) else []
                try:
                    until = float(data[WARM_UNTIL])
                except (TypeError, ValueError):
                    continue
                warm |= {str(instance_id): until for instance_id in with_ids}
        return warm


async def reap_expired_blue(
    router: Router, runtime: Runtime, records: WarmRecords, *, now: float
) -> list[str]:
    """Drain and stop warm fleets whose rollback window has passed; return their instance ids.

    A warm instance is one in the router whose pool has no live traffic; until when it stays
    comes from the history (`WarmRecords`), never from the router, and one without a record is
    left alone. Skips a route while a deployment of it holds the lock: that deployment decides
    about its fleet. Failures are logged, never raised (housekeeping).
    """
    reaped: list[str] = []
    try:
        routes = await router.status()
    except RouterError as exc:
        log.warning("cannot list routes to reap expired blue fleets: %s", exc)
        return reaped
    for route in routes:
        warm = [t for t in route.targets if _out_of_rotation(t, route.pool_weight(t.spec.pool))]
        if not warm:
            continue
        service, environment = parse_route_name(route.route.service)
        try:
            if await records.store.lock_holder(service, environment) is not None:
                continue
            deadlines = await records.deadlines(service, environment)
        except StoreError as exc:
            log.warning("cannot read the warm fleets of %s: %s", route.route.service, exc)
            continue
        for target in warm:
            until = deadlines.get(target.spec.target_id)
            if until is None or until > now:
                continue
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


def _out_of_rotation(target: TargetStatus, pool_weight: int) -> bool:
    """In the router, not draining, not preview, and its pool weighs nothing: kept warm."""
    return pool_weight == 0 and not target.draining and not target.spec.preview
