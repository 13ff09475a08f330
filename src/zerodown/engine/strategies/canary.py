"""canary: shift traffic to the new revision in weighted steps, judging each against the baseline.

Per step the new revision's instances, in a pool of their own, get W % of the route's traffic and
the baseline's pools the rest, in one `set_pool_weights` (no app cooperation: the router splits
each pool's share among its instances). A step holds for its pause (or, without one,
until `zerodown promote`) while analyses run every `analysis.interval`; a failed analysis raises
`AnalysisFailed` (the deployer puts the weight back on the baseline and stops the canary). After
the last step (or `promote --full`) the whole fleet moves to the new revision and the baseline
drains away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from zerodown.config.progressive import CanaryStep
from zerodown.domain.events import EventKind
from zerodown.engine.analysis import AnalysisResult, Verdict, judge
from zerodown.engine.commands import Command
from zerodown.engine.fleet import DEFAULT_WEIGHT, FleetMember, pool_shares, run_all
from zerodown.engine.strategies.base import (
    BatchTimer,
    StrategyContext,
    install,
    register,
    retire_all,
    start_new,
)
from zerodown.errors import AnalysisFailed
from zerodown.metrics.source import metrics_source

COMMAND_POLL = 1.0  # longest wait for a promote/pause/resume to take effect


@dataclass
class CanaryRun:
    """The state of one canary: its instances, the baseline, the current step, user commands."""

    ctx: StrategyContext
    baseline: list[FleetMember]
    pool: str  # the canary's own pool in the router
    canary: list[FleetMember] = field(default_factory=list)
    paused: bool = False
    full: bool = False  # `promote --full`: skip the remaining steps

    @property
    def revision(self) -> str:
        """The new revision."""
        return self.ctx.release.sha

    @property
    def baseline_revision(self) -> str:
        """The revision most of the baseline runs."""
        return self.baseline[0].revision if self.baseline else ""


@register("canary")
class CanaryStrategy:
    """Weighted steps with pauses and analysis, then the whole fleet; see the module docstring."""

    name = "canary"

    async def run(self, ctx: StrategyContext) -> None:
        """Walk the steps; raise AnalysisFailed (or any step's error) to roll back."""
        baseline = [m for m in ctx.old if m.serving]
        state = CanaryRun(ctx, baseline, pool=ctx.fleet.new_pool(ctx.release.sha))
        if not baseline:
            await ctx.fleet.sink.emit(
                EventKind.DECISION,
                "canary: nothing serves yet, so there is no baseline: the whole fleet starts",
                {"strategy": self.name},
            )
        else:
            for number, step in enumerate(ctx.config.steps, start=1):
                if step.weight >= 100:
                    break
                await self._set_weight(state, number, step.weight)
                await self._hold(state, number, step)
                if state.full:
                    break
        await self._complete(state)

    async def _grow(self, state: CanaryRun, count: int, label: str) -> None:
        """Start instances until the canary has `count` (the first join its pool at weight 0,
        later ones the pool's share of the current step)."""
        ctx = state.ctx
        missing = count - len(state.canary)
        if missing <= 0:
            return
        ids = [ctx.fleet.new_instance_id(ctx.release.sha) for _ in range(missing)]
        batch = await BatchTimer(ctx, len(state.canary) + 1, ctx.wanted, ids).start()
        ok = False
        try:
            await install(ctx, ids, label)
            members = await start_new(ctx, ids, label, start_hook_first=False)
            await ctx.hook("BeforeAllowTraffic", members, label)
            if not state.canary:
                await ctx.fleet.reserve_pool(state.pool)
            admitted = await run_all(ctx.fleet.admit(m, pool=state.pool) for m in members)
            await ctx.hook("AfterAllowTraffic", admitted, label)
            state.canary.extend(admitted)
            ok = True
        finally:
            await batch.finish(ok)

    async def _set_weight(self, state: CanaryRun, number: int, weight: int) -> None:
        ctx = state.ctx
        wanted = min(ctx.wanted, max(1, math.ceil(ctx.wanted * weight / 100)))
        await self._grow(state, wanted, f"step {number}")
        new, old = len(state.canary), len(state.baseline)
        # Integer pool weights that split exactly weight : 100 - weight, in one router step.
        weights = {state.pool: weight * old} | pool_shares(state.baseline, 100 - weight)
        await ctx.fleet.router.set_pool_weights(ctx.fleet.route_name, weights)
        await ctx.fleet.sink.emit(
            EventKind.STEP,
            f"step {number}: {weight} % of traffic on {state.revision[:12]} "
            f"({new} canary, {old} baseline instance(s))",
            {
                "step": number,
                "weight": weight,
                "canary": new,
                "baseline": old,
                "pool_weights": weights,
            },
        )

    async def _hold(self, state: CanaryRun, number: int, step: CanaryStep) -> None:
        """Hold the step: analyse every interval, obey commands, end on time or promote."""
        ctx = state.ctx
        clock = ctx.fleet.clock
        config = ctx.config.analysis
        started = clock.time()
        opened = clock.monotonic()
        ends = None if step.pause is None else opened + step.pause
        give_up = (ends if ends is not None else opened) + config.inconclusive_limit
        next_analysis = opened + min(config.interval, step.pause or config.interval)
        verdict: Verdict | None = None
        waived = False  # inconclusive past the limit with on_inconclusive: pass
        while True:
            promote = await self._obey(state, number)
            now = clock.monotonic()
            if now >= next_analysis or promote or (ends is not None and now >= ends):
                result = await self._analyse(state, number, step.weight, started)
                verdict = result.verdict
                next_analysis = now + config.interval
                if verdict is Verdict.FAIL:
                    raise AnalysisFailed(result.reason)
                if verdict is Verdict.INCONCLUSIVE and waived:
                    verdict = Verdict.PASS
                elif verdict is Verdict.INCONCLUSIVE and now >= give_up:
                    if config.on_inconclusive == "fail":
                        raise AnalysisFailed(
                            f"{result.reason}, still after {config.inconclusive_limit:g} s "
                            "(analysis.on_inconclusive: fail)"
                        )
                    verdict, waived = Verdict.PASS, True
                    await ctx.fleet.sink.emit(
                        EventKind.DECISION,
                        f"step {number}: inconclusive for {config.inconclusive_limit:g} s; "
                        "passing it (analysis.on_inconclusive: pass)",
                        {"step": number, "verdict": "pass", "by": "inconclusive_limit"},
                    )
            if promote:
                return
            due = ends is not None and now >= ends
            if due and verdict is Verdict.PASS and not state.paused:
                return
            wake = [next_analysis, now + COMMAND_POLL]
            if ends is not None and now < ends:
                wake.append(ends)
            await clock.sleep(max(0.0, min(wake) - now))

    async def _obey(self, state: CanaryRun, number: int) -> bool:
        """Apply commands sent since the last look; True when the step should end now."""
        inbox = state.ctx.commands
        if inbox is None:
            return False
        promote = False
        for command in await inbox.take():
            if command.command is Command.PAUSE:
                state.paused = True
            elif command.command is Command.RESUME:
                state.paused = False
            else:
                promote = True
                state.full = state.full or command.command is Command.PROMOTE_FULL
            await state.ctx.fleet.sink.emit(
                EventKind.STEP,
                f"step {number}: {command.command.value} by {command.actor}",
                {"step": number, "command": command.command.value, "actor": command.actor},
            )
        return promote

    async def _analyse(
        self, state: CanaryRun, number: int, weight: int, since: float
    ) -> AnalysisResult:
        ctx = state.ctx
        source = ctx.metrics or metrics_source(ctx.fleet.router)
        revisions = [state.revision, state.baseline_revision]
        stats = await source.revision_stats(ctx.fleet.route_name, revisions, since=since)
        result = judge(stats[state.revision], stats[state.baseline_revision], ctx.config.analysis)
        await ctx.fleet.sink.emit(
            EventKind.ANALYSIS,
            f"step {number} ({weight} %): {result.reason}",
            {"step": number, "weight": weight, **result.to_data()},
        )
        return result

    async def _complete(self, state: CanaryRun) -> None:
        """Everything on the new revision: start the rest, one pool switch, drain the baseline."""
        ctx = state.ctx
        await self._grow(state, ctx.wanted, "final")
        weights = {state.pool: DEFAULT_WEIGHT * len(state.canary)}
        weights |= {m.pool: 0 for m in state.baseline}
        await ctx.fleet.router.set_pool_weights(ctx.fleet.route_name, weights)
        await ctx.fleet.sink.emit(
            EventKind.STEP,
            f"100 % of traffic on {state.revision[:12]} ({len(state.canary)} instance(s))",
            {"step": "final", "weight": 100, "pool_weights": weights},
        )
        await retire_all(ctx, ctx.take_old(len(ctx.old)))
