"""`AlarmGuard`: evaluates an environment's alarms on live router metrics while a deployment runs
(and through its bake window), records each transition, and fails the deployment on ALARM."""

from __future__ import annotations

import logging
from typing import Any

from zerodown.alarms.evaluate import AlarmEvaluator, Transition
from zerodown.alarms.history import record_transition
from zerodown.alarms.logwatch import InstanceLogWatch
from zerodown.alarms.model import LOG_PREFIX, AlarmDefinition, AlarmState
from zerodown.clock import Clock, SystemClock
from zerodown.domain.events import EventKind
from zerodown.engine.extensions import DeploymentContext
from zerodown.errors import AlarmTriggered, ZerodownError
from zerodown.metrics.logfilters import LogMetricFilter
from zerodown.metrics.series import PERIOD, period_start
from zerodown.metrics.source import MetricsSource, metrics_source
from zerodown.store.base import HistoryStore

log = logging.getLogger(__name__)

EVALUATE_EVERY = 1.0  # seconds; one control-socket call per round, so a breach shows at once


def definitions(ctx: DeploymentContext) -> list[AlarmDefinition]:
    """The alarms configured for the deployment's environment."""
    alarms = getattr(ctx.environment, "alarms", None) or []
    return [alarm.to_definition() for alarm in alarms]


def log_filters(ctx: DeploymentContext) -> list[LogMetricFilter]:
    """The service's log metric filters."""
    configured = getattr(ctx.service, "log_metrics", None) or []
    return [
        LogMetricFilter(item.name, item.pattern, item.value_field, item.threshold)
        for item in configured
    ]


class AlarmGuard:
    """A `DeploymentGuard`: every `interval` s, judge every alarm of the environment on the
    router's metrics of this service since the deployment started."""

    def __init__(
        self,
        *,
        store: HistoryStore | None = None,
        clock: Clock | None = None,
        interval: float = EVALUATE_EVERY,
    ) -> None:
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.interval = interval

    async def watch(self, ctx: DeploymentContext) -> None:
        """Evaluate until cancelled; raise `AlarmTriggered` when a rollback alarm fires."""
        alarms = definitions(ctx)
        if not alarms:
            return
        if ctx.record.kind == "rollback":
            # A rollback is judged by nothing but its health checks: the errors that caused it
            # are still in the metrics, and failing it would restore the bad revision.
            await ctx.emit(EventKind.DECISION, "alarms are not evaluated during a rollback", None)
            return
        source = metrics_source(ctx.router)
        if not source.measures:
            await ctx.emit(
                EventKind.DECISION,
                f"alarms not evaluated: {source.measured_by} measures nothing",
                None,
            )
            return
        evaluators = [AlarmEvaluator(alarm, self.clock) for alarm in alarms]
        tail = (
            InstanceLogWatch(ctx.runtime, log_filters(ctx))
            if any(a.metric.startswith(LOG_PREFIX) for a in alarms)
            else None
        )
        log_counts: dict[str, dict[int, int]] = {}
        since = period_start(self.clock.time())
        await ctx.emit(
            EventKind.DECISION,
            f"watching {len(alarms)} alarm(s): " + "; ".join(a.describe() for a in alarms),
            {"alarms": [a.name for a in alarms]},
        )
        try:
            await self._evaluate(ctx, source, evaluators, tail, log_counts, since)
        finally:
            if tail is not None:
                await tail.close()

    async def _evaluate(
        self,
        ctx: DeploymentContext,
        source: MetricsSource,
        evaluators: list[AlarmEvaluator],
        tail: InstanceLogWatch | None,
        log_counts: dict[str, dict[int, int]],
        since: float,
    ) -> None:
        """Judge every alarm each interval until cancelled (`watch` cleans up after it)."""
        while True:
            try:
                metrics = await source.report(since=since)
            except ZerodownError as exc:
                log.warning("alarms: cannot read router metrics: %s", exc)
                await self.clock.sleep(self.interval)
                continue
            if tail is not None:
                await self._poll_logs(ctx, tail, log_counts, metrics)
            for evaluator in evaluators:
                counts = None
                if evaluator.alarm.metric.startswith(LOG_PREFIX):
                    counts = log_counts.get(evaluator.alarm.metric[len(LOG_PREFIX) :], {})
                # Request metrics of the new revision only: the old one's errors (often why
                # this deployment happens) must not roll the fix back. Health is per route.
                transition = evaluator.evaluate(
                    metrics, ctx.route, revision=ctx.record.revision, log_counts=counts
                )
                if transition is not None:
                    await self._record(ctx, evaluator.alarm, transition)
            await self.clock.sleep(self.interval)

    async def _poll_logs(
        self,
        ctx: DeploymentContext,
        tail: InstanceLogWatch,
        log_counts: dict[str, dict[int, int]],
        metrics: dict[str, Any],
    ) -> None:
        instances = await ctx.runtime.list(ctx.record.service)
        counts = tail.poll(
            [i for i in instances if i.labels.get("environment") == ctx.record.environment]
        )
        bucket = int(metrics.get("current", period_start(self.clock.time(), PERIOD)))
        for name, count in counts.items():
            series = log_counts.setdefault(name, {})
            series[bucket] = series.get(bucket, 0) + count

    async def _record(
        self, ctx: DeploymentContext, alarm: AlarmDefinition, transition: Transition
    ) -> None:
        data = {
            **transition.to_json(),
            "metric": alarm.metric,
            "statistic": alarm.statistic,
            "period": alarm.period,
            "comparison": alarm.comparison.symbol,
        }
        await ctx.emit(
            EventKind.ALARM,
            f"alarm {alarm.name}: {transition.old_state.value} -> {transition.new_state.value} "
            f"({transition.reason})",
            data,
        )
        engine = None if self.store is None else self.store.sql_engine()
        if engine is not None:
            try:
                await record_transition(
                    engine,
                    transition,
                    environment=ctx.record.environment,
                    service=ctx.record.service,
                    deployment_id=ctx.record.id,
                )
            except ZerodownError as exc:
                log.warning("alarm history not written: %s", exc)
        if transition.new_state is not AlarmState.ALARM or not alarm.rollback:
            return
        value = "no data" if transition.value is None else f"{transition.value:g}"
        if not ctx.environment.auto_rollback:
            await ctx.emit(
                EventKind.DECISION,
                f"alarm {alarm.name} is in ALARM, but auto_rollback is off for "
                f"{ctx.record.environment}: the deployment goes on",
                {"alarm": alarm.name},
            )
            return
        raise AlarmTriggered(
            f"alarm {alarm.name} went to ALARM ({alarm.describe()}; newest value {value}): "
            f"{transition.reason}",
            alarm=alarm.name,
            value=transition.value,
        )
